using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Training;

/// <summary>
/// Auxiliary-loss-free load balancing (training.md): after each optimizer step, for every MoE layer,
/// b_e ← b_e + γ·sign(c̄ − c_e) with c_e the tokens routed to expert e over the step's global batch.
/// Also the MaxVio balance metric, (max_e c_e − c̄)/c̄, per MoE layer.
/// </summary>
public sealed class BiasBalancer
{
    private readonly List<Gate> _gates;
    private readonly int _modelGates;
    private readonly long[][] _counts;
    // The count array each gate had at the last Accumulate: a gate that did not run since (the MTP block's with
    // mtp_depth 0) still holds the same array, and its old counts must not be added again.
    private readonly long[]?[] _accumulated;
    private readonly bool[] _ran;
    private readonly bool[] _biasFrozen;

    public BiasBalancer(DeepSeekModel model)
    {
        _gates = model.Layers.Where(b => b.Moe is not null).Select(b => b.Moe!.Gate).ToList();
        _modelGates = _gates.Count;
        _gates.AddRange(model.MtpModules.Where(m => m.Block.Moe is not null).Select(m => m.Block.Moe!.Gate));
        _counts = _gates.Select(g => new long[g.Experts]).ToArray();
        _accumulated = new long[]?[_gates.Count];
        _ran = new bool[_gates.Count];
        _biasFrozen = new bool[_gates.Count];
    }

    /// <summary>Stops the bias updates of the gates whose routing bias is among <paramref name="frozenBiases"/> (fine-tuning
    /// with frozen gates); their MaxVio is still reported.</summary>
    public void FreezeBiases(IReadOnlySet<Tensors.Tensor> frozenBiases)
    {
        for (int i = 0; i < _gates.Count; i++)
            _biasFrozen[i] = _gates[i].ScoreCorrectionBias is { } bias && frozenBiases.Contains(bias);
    }

    /// <summary>Every routing gate: the model's MoE layers in order, then the MTP blocks'.</summary>
    public IReadOnlyList<Gate> Gates => _gates;

    /// <summary>The model's own MoE layers (what inference and validation run; MaxVio is averaged over these).</summary>
    public IReadOnlyList<Gate> ModelGates => _gates.GetRange(0, _modelGates);

    /// <summary>Adds the counts of the forward that just ran (call once per micro-batch); gates that did not run add nothing.</summary>
    public void Accumulate()
    {
        for (int i = 0; i < _gates.Count; i++)
        {
            var c = _gates[i].LastExpertCounts;
            if (ReferenceEquals(c, _accumulated[i]) || c.Length == 0) continue;
            _accumulated[i] = c;
            _ran[i] = true;
            for (int e = 0; e < c.Length; e++) _counts[i][e] += c[e];
        }
    }

    /// <summary>Counts per layer gathered since the last <see cref="Update"/> (the reduction point for data parallelism).</summary>
    public long[][] Counts => _counts;

    /// <summary>
    /// Applies the sign rule with step γ to every gate and clears the counts (call once per optimizer step). Returns
    /// MaxVio of every gate that routed tokens during the step (model layers, then MTP) and its mean over the model's
    /// layers, so that runs with and without MTP report the same layers.
    /// </summary>
    public StepBalance Update(float gamma)
    {
        var perGate = new List<float>(_gates.Count);
        double modelSum = 0;
        int modelCount = 0;
        for (int i = 0; i < _gates.Count; i++)
        {
            var counts = _counts[i];
            bool ran = _ran[i] || counts.Any(c => c != 0);
            if (ran)
            {
                float vio = MaxVio(counts);
                perGate.Add(vio);
                if (i < _modelGates) { modelSum += vio; modelCount++; }
            }
            if (gamma > 0 && !_biasFrozen[i] && _gates[i].ScoreCorrectionBias is { IsMeta: false } bias)
            {
                double mean = counts.Average();
                var b = bias.Span;
                for (int e = 0; e < counts.Length; e++) b[e] += gamma * Math.Sign(mean - counts[e]);
            }
            Array.Clear(counts);
            _ran[i] = false;
        }
        return new StepBalance([.. perGate], modelCount > 0 ? (float)(modelSum / modelCount) : 0f);
    }

    /// <summary>MaxVio = (max_e c_e − c̄)/c̄ over one layer's routed experts (0 when nothing was routed).</summary>
    public static float MaxVio(ReadOnlySpan<long> counts)
    {
        if (counts.IsEmpty) return 0;
        long max = 0, sum = 0;
        foreach (long c in counts) { max = Math.Max(max, c); sum += c; }
        double mean = (double)sum / counts.Length;
        return mean == 0 ? 0 : (float)((max - mean) / mean);
    }
}

/// <summary>One optimizer step's balance: MaxVio per gate that routed tokens (model layers, then MTP), and the mean over the model's layers.</summary>
public sealed record StepBalance(float[] PerGate, float ModelMean);
