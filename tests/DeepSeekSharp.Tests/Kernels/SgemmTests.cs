using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels;

public class SgemmTests
{
    private static readonly WorkerPool Pool = new(2);

    public static TheoryData<int, int, int> Shapes => new()
    {
        { 1, 1, 1 }, { 5, 7, 3 }, { 6, 64, 8 }, { 7, 65, 129 }, { 13, 130, 511 }, { 96, 64, 512 }, { 97, 63, 513 },
        { 200, 300, 100 }, { 64, 2050, 40 }, { 130, 70, 1030 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void AllTransposeCasesMatchReference(int m, int n, int k)
    {
        var rng = new Random(m * 31 + n * 7 + k);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (var pool in new[] { null, Pool })
                {
                    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
                    var a = Random(rng, (ta ? k : m) * lda);
                    var b = Random(rng, (tb ? n : k) * ldb);
                    var c0 = Random(rng, m * ldc);
                    foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, 1f), (-2f, 0.25f) })
                    {
                        var want = (float[])c0.Clone();
                        var got = (float[])c0.Clone();
                        if (beta == 0) Array.Fill(got, float.NaN); // beta = 0 must not read C
                        ReferenceGemm.Multiply(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
                        Sgemm.Multiply(pool, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, got, ldc);
                        for (int i = 0; i < m; i++)
                            for (int j = 0; j < n; j++)
                            {
                                float w = want[i * ldc + j], g = got[i * ldc + j];
                                Assert.True(Math.Abs(w - g) <= 1e-4f * (1 + Math.Abs(w)) * Math.Sqrt(k),
                                    $"ta={ta} tb={tb} pool={pool is not null} alpha={alpha} beta={beta} C[{i},{j}]: want {w}, got {g}");
                            }
                        // Padding columns between n and ldc are untouched.
                        for (int i = 0; i < m; i++)
                            for (int j = n; j < ldc; j++)
                                if (beta != 0) Assert.Equal(c0[i * ldc + j], got[i * ldc + j]);
                    }
                }
    }

    private static float[] Random(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
