using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels.Blis;

public sealed class BlisSgemmBatchedTests : IDisposable
{
    private readonly WorkerPool _pool2 = new(2);

    public void Dispose() => _pool2.Dispose();

    [Theory]
    [InlineData(false, false, 4, 17, 33, 9, false)]   // small entries: parallel over the batch
    [InlineData(true, false, 3, 70, 64, 40, false)]
    [InlineData(false, true, 5, 8, 300, 20, true)]     // shared B (stride 0), as for one expert's weights
    [InlineData(true, true, 3, 200, 150, 160, false)]  // 3 large entries on 2 threads: parallel inside each GEMM
    [InlineData(false, false, 1, 64, 64, 64, true)]
    public void MatchesReferencePerEntry(bool transA, bool transB, int batch, int m, int n, int k, bool shareB)
    {
        var rng = new Random(batch * 100 + m);
        int lda = (transA ? m : k) + 1, ldb = (transB ? k : n) + 2, ldc = n + 3;
        long strideA = (long)(transA ? k : m) * lda + 5, strideB = shareB ? 0 : (long)(transB ? n : k) * ldb + 7;
        long strideC = (long)m * ldc + 11;
        float[] a = Random(rng, (int)(strideA * batch)), b = Random(rng, (int)Math.Max(strideB * batch, (transB ? n : k) * ldb));
        float[] c0 = Random(rng, (int)(strideC * batch));
        foreach (var (alpha, beta, pool) in new[] { (1f, 0f, (WorkerPool?)null), (0.5f, 2f, _pool2), (1f, 1f, _pool2) })
        {
            float[] expected = (float[])c0.Clone(), actual = (float[])c0.Clone();
            for (int i = 0; i < batch; i++)
                ReferenceGemm.Multiply(transA, transB, m, n, k, alpha, a.AsSpan((int)(i * strideA)), lda,
                    b.AsSpan((int)(i * strideB)), ldb, beta, expected.AsSpan((int)(i * strideC)), ldc);
            BlisSgemm.MultiplyBatched(pool, batch, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, actual, ldc, strideC);
            double tol = 2e-6 * (k + 16) * 2;
            for (int i = 0; i < actual.Length; i++)
                Assert.True(Math.Abs(actual[i] - expected[i]) <= tol, $"index {i}: {actual[i]} vs {expected[i]}");
        }
    }

    [Fact]
    public void ValidatesLengthsAndOverlap()
    {
        float[] a = new float[2 * 6], b = new float[2 * 6], c = new float[2 * 4];
        BlisSgemm.MultiplyBatched(null, 2, false, false, 2, 2, 3, 1f, a, 3, 6, b, 2, 6, 0f, c, 2, 4);
        Assert.Throws<ArgumentException>(() => BlisSgemm.MultiplyBatched(null, 2, false, false, 2, 2, 3, 1f, a.AsSpan(0, 11), 3, 6, b, 2, 6, 0f, c, 2, 4));
        Assert.Throws<ArgumentException>(() => BlisSgemm.MultiplyBatched(null, 2, false, false, 2, 2, 3, 1f, a, 3, 6, b, 2, 6, 0f, c, 2, 3));
        Assert.Throws<ArgumentException>(() => BlisSgemm.MultiplyBatched(null, 3, false, false, 2, 2, 3, 1f, a, 3, 6, b, 2, 0, 0f, c, 2, 4));
    }

    private static float[] Random(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++) x[i] = rng.NextSingle() * 2f - 1f;
        return x;
    }
}
