using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels.Blis;

/// <summary>
/// A right-hand operand packed once (IBackend.PackGemmB) and reused by several products (GemmPackedB), against the
/// reference GEMM: several depth blocks (k &gt; KC = 512), several column blocks (n &gt; NC = 2048), edge strips,
/// both transposes of A and of the packed B, alpha/beta, one and two threads, one packing used twice.
/// </summary>
public sealed class PackedGemmTests : IDisposable
{
    private readonly CpuBackend _one = new(1), _two = new(2);

    public void Dispose()
    {
        _one.Pool.Dispose();
        _two.Pool.Dispose();
    }

    [Theory]
    [InlineData(false, false, 37, 70, 25)]
    [InlineData(true, false, 100, 130, 1100)]
    [InlineData(false, true, 19, 2100, 40)]
    [InlineData(true, true, 64, 257, 513)]
    public void ProductsWithOnePackedOperandMatchTheReference(bool transA, bool transB, int m, int n, int k)
    {
        var rng = new Random(m + n + k);
        int lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 2, ldc = n + 1;
        float[] b = Random(rng, (transB ? n : k) * ldb);
        foreach (var backend in new[] { _one, _two })
        {
            using var packed = backend.PackGemmB(transB, b, ldb, n, k);
            Assert.Equal((n, k), (packed.N, packed.K));
            // Two different A and C with the same packed B, as the row blocks of the output head use it.
            foreach (var (alpha, beta, seed) in new[] { (1f, 0f, 1), (0.5f, 1.5f, 2) })
            {
                var r = new Random(seed);
                float[] a = Random(r, (transA ? k : m) * lda), c = Random(r, m * ldc);
                float[] expected = (float[])c.Clone();
                ReferenceGemm.Multiply(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, expected, ldc);
                backend.GemmPackedB(transA, m, alpha, a, lda, packed, beta, c, ldc);
                double tol = 4e-6 * (k + 16);
                for (int i = 0; i < c.Length; i++)
                    Assert.True(Math.Abs(c[i] - expected[i]) <= tol, $"[{i}] {c[i]} vs {expected[i]} (threads {backend.Threads})");
            }
        }
    }

    [Fact]
    public void ShortOperandsAreRejectedAndADisposedPackingCannotBeUsed()
    {
        Assert.Throws<ArgumentException>(() => _one.PackGemmB(false, new float[10], 4, 4, 3));
        var packed = _one.PackGemmB(false, new float[12], 4, 4, 3);
        Assert.Throws<ArgumentException>(() => _one.GemmPackedB(false, 2, 1f, new float[5], 3, packed, 0f, new float[8], 4));
        Assert.Throws<ArgumentException>(() => _one.GemmPackedB(false, 2, 1f, new float[6], 3, packed, 0f, new float[7], 4));
        packed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _one.GemmPackedB(false, 2, 1f, new float[6], 3, packed, 0f, new float[8], 4));
    }

    private static float[] Random(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++) x[i] = rng.NextSingle() * 2f - 1f;
        return x;
    }
}
