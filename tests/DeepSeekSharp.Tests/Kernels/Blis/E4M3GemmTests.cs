using DeepSeekSharp.Fp8;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tests.Kernels.Blis;

/// <summary>
/// The FP8 GEMM that decodes its E4M3 operands while packing gives exactly what dequantising both operands and running
/// the fp32 blocked GEMM gives: the same values reach the same micro-kernel in the same order.
/// </summary>
public sealed unsafe class E4M3GemmTests
{
    private static float[] Random(Random rng, int length, float outlier)
    {
        var v = new float[length];
        for (int i = 0; i < v.Length; i++) v[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 97 == 0 ? outlier : 1f);
        return v;
    }

    // Shapes with partial tiles and strips, several row blocks (MC = 96), and depths that split into blocks not
    // aligned to 128 (700 → 2 × 350), so decoding crosses tile boundaries inside a depth block.
    [Theory]
    [InlineData(false, true, 150, 140, 200, 1, 128, 128, 128)]  // forward: x · Wᵀ
    [InlineData(false, false, 150, 200, 140, 1, 128, 128, 128)] // input gradient: dy · W
    [InlineData(false, true, 257, 300, 700, 1, 128, 128, 128)]
    [InlineData(false, false, 200, 129, 700, 1, 128, 128, 128)]
    [InlineData(true, false, 140, 200, 300, 128, 1, 128, 1)]    // weight gradient: dyᵀ · x, 128×1 tiles on both
    [InlineData(true, false, 257, 130, 700, 128, 1, 128, 1)]
    public void DecodingWhilePackingIsBitIdenticalToDequantisingFirst(bool transA, bool transB, int m, int n, int k, int aTileRows,
        int aTileCols, int bTileRows, int bTileCols)
    {
        var rng = new Random(m * 31 + n * 7 + k);
        var (aRows, aCols) = transA ? (k, m) : (m, k);
        var (bRows, bCols) = transB ? (n, k) : (k, n);
        var a = Fp8Quantizer.Quantize(Random(rng, m * k, 40f), aRows, aCols, aTileRows, aTileCols);
        var b = Fp8Quantizer.Quantize(Random(rng, bRows * bCols, 0.02f), bRows, bCols, bTileRows, bTileCols);
        float[] ad = a.Dequantize(), bd = b.Dequantize();
        var expected = Random(rng, m * n, 1f);
        var got = (float[])expected.Clone();
        const float beta = 0.5f; // accumulating into C, as the input-gradient GEMM does
        fixed (float* pa = ad) fixed (float* pb = bd) fixed (float* pc = expected)
            SgemmBlocked.Multiply(null, BlisSgemmKernel.Best, transA, transB, m, n, k, 1f, pa, aCols, pb, bCols, beta, pc, n);
        new CpuBackend(2).GemmE4M3(transA, transB, m, n, k, a, b, beta, got, n);
        Assert.Equal(expected, got);
    }

    [Fact]
    public void OperandsOfTheWrongShapeAreRefused()
    {
        var a = Fp8Quantizer.QuantizeRowTiles(new float[10 * 64], 10, 64);
        var b = Fp8Quantizer.QuantizeBlocks(new float[20 * 32], 20, 32);
        var ex = Assert.Throws<ArgumentException>(() => new CpuBackend(1).GemmE4M3(false, true, 10, 20, 64, a, b, 0f, new float[200], 20));
        Assert.Contains("b is [20, 32], expected [20, 64]", ex.Message);
    }
}
