using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Training;

/// <summary>
/// Auxiliary-loss-free load balancing (training.md): after each optimizer step, for every MoE layer,
/// b_e ← b_e + γ·sign(c̄ − c_e) with c_e the tokens routed to expert e over the step's global batch.
/// Also the MaxVio balance metric, (max_e c_e − c̄)/c̄.
/// </summary>
public sealed class BiasBalancer
{
    private readonly List<Gate> _gates;
    private readonly long[][] _counts;

    public BiasBalancer(DeepSeekModel model)
    {
        _gates = model.Layers.Where(b => b.Moe is not null).Select(b => b.Moe!.Gate)
            .Concat(model.MtpModules.Where(m => m.Block.Moe is not null).Select(m => m.Block.Moe!.Gate)).ToList();
        _counts = _gates.Select(g => new long[g.Experts]).ToArray();
    }

    public IReadOnlyList<Gate> Gates => _gates;

    /// <summary>Adds the counts of the forward that just ran (call once per micro-batch).</summary>
    public void Accumulate()
    {
        for (int i = 0; i < _gates.Count; i++)
        {
            var c = _gates[i].LastExpertCounts;
            for (int e = 0; e < c.Length; e++) _counts[i][e] += c[e];
        }
    }

    /// <summary>Counts per layer gathered since the last <see cref="Update"/> (the reduction point for data parallelism).</summary>
    public long[][] Counts => _counts;

    /// <summary>Applies the sign rule with step γ and clears the counts; returns MaxVio per layer for the step.</summary>
    public float[] Update(float gamma)
    {
        var maxVio = new float[_gates.Count];
        for (int i = 0; i < _gates.Count; i++)
        {
            var counts = _counts[i];
            maxVio[i] = MaxVio(counts);
            if (gamma > 0 && _gates[i].ScoreCorrectionBias is { IsMeta: false } bias)
            {
                double mean = counts.Average();
                var b = bias.Span;
                for (int e = 0; e < counts.Length; e++) b[e] += gamma * Math.Sign(mean - counts[e]);
            }
            Array.Clear(counts);
        }
        return maxVio;
    }

    public static float MaxVio(ReadOnlySpan<long> counts)
    {
        if (counts.IsEmpty) return 0;
        long max = 0, sum = 0;
        foreach (long c in counts) { max = Math.Max(max, c); sum += c; }
        double mean = (double)sum / counts.Length;
        return mean == 0 ? 0 : (float)((max - mean) / mean);
    }
}
