using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels.Blis;

/// <summary>Builds random GEMM problems and checks <see cref="BlisSgemm"/> against <see cref="ReferenceGemm"/>.</summary>
internal static unsafe class GemmTestHelper
{
    public sealed record Problem(bool TransA, bool TransB, int M, int N, int K, int Lda, int Ldb, int Ldc,
        float[] A, float[] B, float[] C);

    /// <summary>Random problem with values in [-1, 1); leading dimensions are the minimum plus the given padding.</summary>
    public static Problem Create(bool transA, bool transB, int m, int n, int k, int pad = 0, int seed = 1, bool nanC = false)
    {
        var rng = new Random(seed * 7919 + m * 31 + n * 17 + k);
        int lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad, ldc = n + pad;
        float[] a = Fill(rng, Math.Max(1, (transA ? k : m) * lda));
        float[] b = Fill(rng, Math.Max(1, (transB ? n : k) * ldb));
        float[] c = nanC ? Enumerable.Repeat(float.NaN, Math.Max(1, m * ldc)).ToArray() : Fill(rng, Math.Max(1, m * ldc));
        return new Problem(transA, transB, m, n, k, Math.Max(1, lda), Math.Max(1, ldb), Math.Max(1, ldc), a, b, c);
    }

    private static float[] Fill(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++) x[i] = rng.NextSingle() * 2f - 1f;
        return x;
    }

    /// <summary>Runs the kernel under test and the reference on copies of C and asserts they agree (padding untouched).</summary>
    public static void Check(Problem p, float alpha, float beta, WorkerPool? pool, BlisSgemmKernel kernel = BlisSgemmKernel.Best)
    {
        float[] expected = (float[])p.C.Clone();
        ReferenceGemm.Multiply(p.TransA, p.TransB, p.M, p.N, p.K, alpha, p.A, p.Lda, p.B, p.Ldb, beta, expected, p.Ldc);
        float[] actual = (float[])p.C.Clone();
        if (kernel == BlisSgemmKernel.Best)
        {
            BlisSgemm.Multiply(pool, p.TransA, p.TransB, p.M, p.N, p.K, alpha, p.A, p.Lda, p.B, p.Ldb, beta, actual, p.Ldc);
        }
        else
        {
            fixed (float* pa = p.A)
            fixed (float* pb = p.B)
            fixed (float* pc = actual)
                BlisSgemm.MultiplyCore(pool, kernel, p.TransA, p.TransB, p.M, p.N, p.K, alpha, pa, p.Lda, pb, p.Ldb, beta, pc, p.Ldc);
        }

        // fp32 accumulation error grows with k; values are O(1), so an absolute bound scaled by k and the scales.
        double tol = 2e-6 * (p.K + 16) * Math.Max(1, Math.Abs(alpha)) + 1e-6 * Math.Abs(beta);
        for (int i = 0; i < p.M; i++)
        {
            for (int j = 0; j < p.Ldc; j++)
            {
                int idx = i * p.Ldc + j;
                if (j >= p.N)
                {
                    Assert.True(p.C[idx].Equals(actual[idx]), $"padding C[{i},{j}] was written");
                    continue;
                }
                double err = Math.Abs((double)actual[idx] - expected[idx]);
                if (!(err <= tol))
                    Assert.Fail($"C[{i},{j}] = {actual[idx]}, expected {expected[idx]} (err {err:g3} > tol {tol:g3}) " +
                        $"for transA={p.TransA} transB={p.TransB} m={p.M} n={p.N} k={p.K} alpha={alpha} beta={beta} kernel={kernel}");
            }
        }
    }
}
