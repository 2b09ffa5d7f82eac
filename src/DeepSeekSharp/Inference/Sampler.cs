namespace DeepSeekSharp.Inference;

/// <summary>Sampling settings. Temperature 0 is greedy (argmax, ties to the lower id).</summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; } = 0f;
    public int TopK { get; init; }
    public float TopP { get; init; } = 1f;
    public float RepetitionPenalty { get; init; } = 1f;
    public int? Seed { get; init; }

    public void Validate()
    {
        if (!float.IsFinite(Temperature) || Temperature < 0) throw new DeepSeekSharpException("temperature must be a finite number ≥ 0");
        if (TopK < 0) throw new DeepSeekSharpException("top-k must be ≥ 0 (0 = off)");
        if (!(TopP > 0 && TopP <= 1)) throw new DeepSeekSharpException("top-p must be in (0, 1]");
        if (!float.IsFinite(RepetitionPenalty) || RepetitionPenalty <= 0) throw new DeepSeekSharpException("repetition penalty must be > 0");
    }
}

/// <summary>
/// Turns logits into a distribution (repetition penalty as in CTRL/HF: positive logits divided, negative
/// multiplied; temperature; top-k; top-p nucleus) and samples from it.
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _o;
    private readonly Random _rng;

    public Sampler(SamplingOptions options)
    {
        options.Validate();
        _o = options;
        _rng = options.Seed is int s ? new Random(s) : new Random();
    }

    public bool IsGreedy => _o.Temperature == 0f;

    public static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    /// <summary>The sampling distribution (a probability per id) after penalty, temperature, top-k and top-p.</summary>
    public double[] Distribution(ReadOnlySpan<float> logits, IReadOnlyCollection<int> history, int usable)
    {
        var z = new double[usable];
        for (int i = 0; i < usable; i++) z[i] = logits[i];
        if (_o.RepetitionPenalty != 1f)
            foreach (int id in history.Distinct())
                if (id < usable) z[id] = z[id] > 0 ? z[id] / _o.RepetitionPenalty : z[id] * _o.RepetitionPenalty;
        var p = new double[usable];
        if (IsGreedy)
        {
            int best = 0;
            for (int i = 1; i < usable; i++) if (z[i] > z[best]) best = i;
            p[best] = 1;
            return p;
        }
        double max = z.Max();
        double sum = 0;
        for (int i = 0; i < usable; i++) sum += p[i] = Math.Exp((z[i] - max) / _o.Temperature);
        for (int i = 0; i < usable; i++) p[i] /= sum;
        if (_o.TopK > 0 && _o.TopK < usable || _o.TopP < 1)
        {
            var order = Enumerable.Range(0, usable).OrderByDescending(i => p[i]).ThenBy(i => i).ToArray();
            int keep = _o.TopK > 0 ? Math.Min(_o.TopK, usable) : usable;
            double cum = 0;
            for (int r = 0; r < keep; r++)
            {
                cum += p[order[r]];
                if (cum >= _o.TopP) { keep = r + 1; break; }
            }
            var kept = new double[usable];
            double ks = 0;
            for (int r = 0; r < keep; r++) ks += kept[order[r]] = p[order[r]];
            for (int i = 0; i < usable; i++) kept[i] /= ks;
            p = kept;
        }
        return p;
    }

    public int Sample(double[] p)
    {
        double u = _rng.NextDouble();
        for (int i = 0; i < p.Length; i++)
            if ((u -= p[i]) < 0) return i;
        for (int i = p.Length - 1; i >= 0; i--) if (p[i] > 0) return i;
        return 0;
    }

    public double NextUniform() => _rng.NextDouble();
}
