using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Random initialisation (training.md: normal with std = initializer_range; norms 1; routing bias 0).</summary>
public static class ModelInit
{
    public static void InitializeRandom(DeepSeekModel model, int seed)
    {
        var rng = new Random(seed);
        float std = model.Config.InitializerRange;
        foreach (var (name, p) in model.NamedParameters())
        {
            if (p.IsMeta) p.Materialize();
            var span = p.Span;
            if (p.Rank == 1) span.Fill(1f); // every 1-D parameter of the family is a norm weight
            else FillNormal(span, rng, std);
        }
        foreach (var (_, b) in model.NamedBuffers())
        {
            if (b.IsMeta) b.Materialize();
            b.Span.Clear();
        }
    }

    /// <summary>
    /// Moves every element of every matrix by <paramref name="ulps"/> units in the last place, up at even flat indices
    /// and down at odd ones (config key <c>init_ulp_nudge</c>). Two runs of one seed that differ only by this start from
    /// weights a rounding apart: how far their final losses end apart is the noise floor of a comparison between runs.
    /// </summary>
    public static void NudgeMatrices(DeepSeekModel model, int ulps)
    {
        foreach (var (_, p) in model.NamedParameters())
        {
            if (p.Rank < 2) continue;
            var span = p.Span;
            for (int i = 0; i < span.Length; i++)
                for (int u = 0; u < ulps; u++)
                    span[i] = (i & 1) == 0 ? MathF.BitIncrement(span[i]) : MathF.BitDecrement(span[i]);
        }
    }

    /// <summary>Box–Muller normal samples; deterministic for a given <see cref="Random"/> seed.</summary>
    public static void FillNormal(Span<float> span, Random rng, float std)
    {
        for (int i = 0; i < span.Length; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1)) * std;
            span[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < span.Length) span[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
    }
}
