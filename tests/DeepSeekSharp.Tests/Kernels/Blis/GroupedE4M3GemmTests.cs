using DeepSeekSharp.Fp8;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tests.Kernels.Blis;

/// <summary>
/// <see cref="IBackend.GroupedGemmE4M3"/> (the FP8 experts' forward GEMMs, all experts in one call) gives every group
/// exactly what <see cref="IBackend.GemmE4M3"/> gives on that group's rows alone, itself bit-identical to dequantising
/// first (<see cref="E4M3GemmTests"/>): the same decoded values, depth blocks and micro-kernel, whatever the task split.
/// </summary>
public sealed class GroupedE4M3GemmTests
{
    private static float[] Random(Random rng, int length, float outlier)
    {
        var v = new float[length];
        for (int i = 0; i < v.Length; i++) v[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 97 == 0 ? outlier : 1f);
        return v;
    }

    // Groups of 0, 1, 5, 150 (two row blocks of 96) and 257 rows; depths with a partial 128 tile (200) and several depth
    // blocks (700 → 2 × 350); widths with partial 64-wide strips and 128 tiles.
    [Theory]
    [InlineData(true, 140, 200, 1)]
    [InlineData(true, 300, 700, 1)]
    [InlineData(true, 140, 200, 3)]
    [InlineData(true, 300, 700, 3)]
    [InlineData(false, 130, 200, 3)]
    public void EveryGroupIsBitIdenticalToItsOwnFp8Gemm(bool transB, int n, int k, int threads)
    {
        int[] counts = [5, 0, 150, 1, 257];
        int s = counts.Sum();
        var rng = new Random(n * 7 + k);
        float[] stacked = Random(rng, s * k, 40f);
        var a = Fp8Quantizer.Quantize(stacked, s, k, 1, 128);
        var weights = counts.Select(_ => Fp8Quantizer.Quantize(Random(rng, n * k, 0.02f), transB ? n : k, transB ? k : n, 128, 128)).ToArray();
        var got = Random(rng, s * n, 1f); // C is overwritten: stale values must not leak in
        var groups = new List<E4M3GemmGroup>();
        for (int g = 0, off = 0; g < counts.Length; off += counts[g++])
            groups.Add(new E4M3GemmGroup(counts[g], n, k, a, off, weights[g], got, off * n));
        new CpuBackend(threads).GroupedGemmE4M3(transB, groups.ToArray(), n);

        var single = new CpuBackend(1);
        for (int g = 0, off = 0; g < counts.Length; off += counts[g++])
        {
            if (counts[g] == 0) continue;
            var rows = Fp8Quantizer.Quantize(stacked.AsSpan(off * k, counts[g] * k), counts[g], k, 1, 128);
            var expected = new float[counts[g] * n];
            single.GemmE4M3(false, transB, counts[g], n, k, rows, weights[g], 0f, expected, n);
            Assert.Equal(expected, got.AsSpan(off * n, counts[g] * n).ToArray());
        }
    }

    [Fact]
    public void RowsOutsideTheOperandAreRefused()
    {
        var a = Fp8Quantizer.QuantizeRowTiles(new float[10 * 64], 10, 64);
        var b = Fp8Quantizer.QuantizeBlocks(new float[20 * 64], 20, 64);
        var ex = Assert.Throws<ArgumentException>(() => new CpuBackend(1).GroupedGemmE4M3(true, [new E4M3GemmGroup(4, 20, 64, a, 8, b, new float[80], 0)], 20));
        Assert.Contains("rows [8, 12)", ex.Message);
    }
}
