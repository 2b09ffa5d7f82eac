namespace DeepSeekSharp.Fp8;

/// <summary>One row of the GEMM precision study (relative Frobenius errors against fp64).</summary>
/// <param name="K">inner dimension</param>
/// <param name="Promoted">fine-grained scales, fp32 promotion every 128 (DeepSeek-V3)</param>
/// <param name="LimitedAccumulator">fine-grained scales, no promotion, accumulator kept to 14 significant bits</param>
/// <param name="PerTensorPromoted">one scale per tensor, fp32 promotion</param>
/// <param name="PromotedAccumulationOnly">the promoted GEMM against fp64 of the already-quantised inputs (accumulation error alone)</param>
/// <param name="LimitedAccumulationOnly">the limited accumulator against the same (accumulation error alone)</param>
/// <param name="LimitedNearest">as LimitedAccumulator but rounding the accumulator to nearest instead of toward zero</param>
public sealed record Fp8StudyRow(int K, double Promoted, double LimitedAccumulator, double LimitedNearest, double PerTensorPromoted, double PromotedAccumulationOnly, double LimitedAccumulationOnly);

/// <summary>
/// Reproduces DeepSeek-V3's finding on FP8 GEMM accumulation: with ~14-bit accumulation and no promotion the
/// relative error grows with K (≈2% at K = 4096 in the report), while promoting 128-element partial sums to fp32
/// keeps it at the level of FP8 quantisation. Inputs are standard normal activations with a few outlier channels
/// (what makes per-tensor scaling lose precision), m = n = 16.
/// </summary>
public static class Fp8ErrorStudy
{
    public static IReadOnlyList<Fp8StudyRow> Run(IEnumerable<int> ks, int m = 16, int n = 16, int seed = 1, int accumulatorBits = 14)
    {
        var rows = new List<Fp8StudyRow>();
        foreach (int k in ks)
        {
            var (a, b) = Inputs(m, n, k, seed);
            var exact = Reference(a, b, m, n, k);
            var qa = Fp8Quantizer.QuantizeRowTiles(a, m, k);
            var qb = Fp8Quantizer.QuantizeBlocks(b, n, k);
            var promoted = Fp8Gemm.Multiply(qa, qb, Fp8Accumulation.PromoteEvery128);
            var limited = Fp8Gemm.Multiply(qa, qb, Fp8Accumulation.LimitedPrecision, accumulatorBits);
            var nearest = Fp8Gemm.Multiply(qa, qb, Fp8Accumulation.LimitedPrecision, accumulatorBits, roundToNearest: true);
            var pa = Fp8Quantizer.QuantizePerTensor(a, m, k);
            var pb = Fp8Quantizer.QuantizePerTensor(b, n, k);
            var perTensor = Fp8Gemm.Multiply(pa, pb, Fp8Accumulation.PromoteEvery128);
            var quantisedExact = Reference(qa.Dequantize(), qb.Dequantize(), m, n, k);
            rows.Add(new Fp8StudyRow(k, RelErr(promoted, exact), RelErr(limited, exact), RelErr(nearest, exact), RelErr(perTensor, exact),
                RelErr(promoted, quantisedExact), RelErr(limited, quantisedExact)));
        }
        return rows;
    }

    /// <summary>The study's operands: standard normal activations [m, k] with one outlier channel per row (×50, what makes
    /// per-tensor scaling lose precision) and N(0, 0.02²) weights [n, k]; the GPU study uses the same.</summary>
    internal static (float[] Activations, float[] Weights) Inputs(int m, int n, int k, int seed)
    {
        var rng = new Random(seed + k);
        var a = Normal(rng, m * k, 1.0);
        var b = Normal(rng, n * k, 0.02);
        for (int i = 0; i < m; i++) a[i * k + rng.Next(k)] *= 50;
        return (a, b);
    }

    internal static float[] Normal(Random rng, int count, double std)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
            x[i] = (float)(std * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return x;
    }

    private static double[] Reference(float[] a, float[] b, int m, int n, int k)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (double)a[i * k + p] * b[j * k + p];
                c[i * n + j] = s;
            }
        return c;
    }

    private static double RelErr(float[] got, double[] want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++) { num += (got[i] - want[i]) * (got[i] - want[i]); den += want[i] * want[i]; }
        return Math.Sqrt(num / den);
    }
}
