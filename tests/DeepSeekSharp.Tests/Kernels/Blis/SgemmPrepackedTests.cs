using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels.Blis;

/// <summary>
/// <see cref="SgemmPrepacked"/>: an operand packed once and used over prefixes (columns of B, depth of A), B assembled
/// from two sources along its depth, strided in-place A, depth beyond one KC block, edge tiles — against the reference GEMM.
/// </summary>
public unsafe class SgemmPrepackedTests
{
    private static float[] Random(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = rng.NextSingle() * 2f - 1f;
        return x;
    }

    private static void AssertClose(float[] expected, float[] actual, int k, string what)
    {
        double tol = 2e-6 * (k + 16);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"{what}[{i}]: {actual[i]} vs {expected[i]}");
    }

    [Theory]
    [InlineData(64, 150, 32, 16)]   // attention-like: 64-row tiles over 150 keys, depth [32 ; 16]
    [InlineData(13, 70, 5, 3)]      // edge tiles in both directions, odd depths
    public void PackedBFromTwoSourcesServesEveryColumnPrefix(int m, int nTotal, int k1, int k2)
    {
        var rng = new Random(m + nTotal);
        int k = k1 + k2, lda = k + 7, ld1 = k1 + 5;
        float[] a = Random(rng, m * lda), src1 = Random(rng, nTotal * ld1), src2 = Random(rng, nTotal * k2);
        // op(B)[p, j] = src1[j, p] for p < k1, src2[j, p − k1] after: B = [src1 | src2]ᵀ
        var bt = new float[nTotal * k];
        for (int j = 0; j < nTotal; j++)
            for (int p = 0; p < k; p++) bt[j * k + p] = p < k1 ? src1[j * ld1 + p] : src2[j * k2 + p - k1];
        var packed = new float[SgemmPrepacked.PackedBLength(nTotal, k)];
        fixed (float* p1 = src1) fixed (float* p2 = src2) fixed (float* pp = packed)
        {
            SgemmPrepacked.PackB(true, p1, ld1, nTotal, k, 0, k1, pp);
            SgemmPrepacked.PackB(true, p2, k2, nTotal, k, k1, k2, pp);
        }
        foreach (int n in new[] { 1, 64, nTotal - 1, nTotal })
        {
            if (n <= 0) continue;
            var expected = new float[m * n];
            ReferenceGemm.Multiply(false, true, m, n, k, 0.7f, a, lda, bt, k, 0f, expected, n);
            var actual = Enumerable.Repeat(float.NaN, m * n).ToArray(); // beta = 0 must not read C
            fixed (float* pa = a) fixed (float* pp = packed) fixed (float* pc = actual)
                SgemmPrepacked.MultiplyPackedB(m, n, k, 0.7f, pa, lda, pp, 0f, pc, n);
            AssertClose(expected, actual, k, $"n={n}");
        }
    }

    [Theory]
    [InlineData(32, 150)]   // Vᵀ [dv, T] against Pᵀ tiles (the attention forward's O_tileᵀ)
    [InlineData(48, 1100)]  // Kᵀ [dq, T] against dSᵀ tiles (the backward's dQ_tileᵀ), depth over two KC blocks, edge panel
    public void PackedAServesEveryDepthPrefixAgainstAReadyStrip(int m, int kTotal)
    {
        var rng = new Random(m + kTotal);
        int ldx = m + 3;
        float[] x = Random(rng, kTotal * ldx);  // op(A) = Xᵀ, X [kTotal, m]
        var packed = new float[SgemmPrepacked.PackedALength(m, kTotal)];
        fixed (float* px = x) fixed (float* pp = packed) SgemmPrepacked.PackATransposed(px, ldx, m, kTotal, pp);
        foreach (int k in new[] { 1, 64, kTotal / 2 + 1, kTotal })
        {
            // A ready-made strip is simply a row-major [k, 64] matrix.
            float[] strip = Random(rng, k * 64), c0 = Random(rng, m * 64 + 5);
            var expected = (float[])c0.Clone();
            ReferenceGemm.Multiply(true, false, m, 64, k, 1.3f, x, ldx, strip, 64, 0.5f, expected, 64);
            var actual = (float[])c0.Clone();
            fixed (float* pp = packed) fixed (float* ps = strip) fixed (float* pc = actual)
                SgemmPrepacked.MultiplyPackedAStrip(m, k, kTotal, 1.3f, pp, ps, 0.5f, pc, 64);
            AssertClose(expected, actual, k, $"k={k}");
            Assert.Equal(c0[^5..], actual[^5..]); // nothing written past C
        }
    }

    [Fact]
    public void ADepthBeyondThePackedOneIsRejected()
    {
        var packed = new float[SgemmPrepacked.PackedALength(6, 10)];
        var strip = new float[64 * 11]; var c = new float[6 * 64];
        fixed (float* pp = packed) fixed (float* ps = strip) fixed (float* pc = c)
        {
            nint ip = (nint)pp, istrip = (nint)ps, ic = (nint)pc;
            Assert.Throws<ArgumentException>(() => SgemmPrepacked.MultiplyPackedAStrip(6, 11, 10, 1f, (float*)ip, (float*)istrip, 0f, (float*)ic, 64));
        }
    }
}
