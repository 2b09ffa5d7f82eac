using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Tests.Fp8;

/// <summary>The bit-level E5M6 codec against <see cref="MiniFloat.E5M6"/>'s definition, and the power-of-two-scaled cache.</summary>
public class E5M6CacheTests
{
    private static readonly MiniFloat F = MiniFloat.E5M6;

    [Fact]
    public void EveryCodeDecodesAsTheDefinitionSaysScalarAndVector()
    {
        var codes = Enumerable.Range(0, 1 << 12).Select(c => (ushort)c).Concat(new ushort[] { 1, 64, 0x7C0, 0x7C1, 0xFC0 }).ToArray();
        var got = new float[codes.Length];
        E5M6Fast.DecodeScaled(codes, 0.5f, got);
        for (int i = 0; i < codes.Length; i++)
        {
            float want = F.Decode(codes[i]);
            float scalar = E5M6Fast.Decode(codes[i]);
            Assert.True(want.Equals(scalar) || (float.IsNaN(want) && float.IsNaN(scalar)), $"code {codes[i]:X3}: {want} vs scalar {scalar}");
            Assert.True((want * 0.5f).Equals(got[i]) || (float.IsNaN(want) && float.IsNaN(got[i])), $"code {codes[i]:X3}: {want * 0.5f} vs vector {got[i]}");
        }
    }

    [Fact]
    public void EncodingAgreesWithTheDefinitionOnEveryBoundaryAndRandomFloats()
    {
        // Every code's value and both float32 neighbours, every midpoint between codes and its neighbours...
        var probes = new List<float>();
        for (int c = 0; c <= F.MaxCode; c++)
        {
            float v = F.Decode(c);
            float next = F.Decode(Math.Min(c + 1, F.MaxCode));
            float mid = (v + next) / 2;
            foreach (float p in new[] { v, mid })
            {
                probes.AddRange([p, MathF.BitIncrement(p), MathF.BitDecrement(p)]);
                probes.AddRange([-p, -MathF.BitIncrement(p), -MathF.BitDecrement(p)]);
            }
        }
        // ...random floats over the whole exponent range, and specials.
        var rng = new Random(5);
        for (int i = 0; i < 200_000; i++) probes.Add(BitConverter.Int32BitsToSingle(rng.Next(int.MinValue, int.MaxValue)));
        probes.AddRange([0f, -0f, float.Epsilon, 65024f, 65535f, 65536f, 1e30f, float.PositiveInfinity, float.NegativeInfinity, float.NaN]);
        var x = probes.ToArray();
        var vector = new ushort[x.Length];
        E5M6Fast.EncodeScaled(x, 1f, vector);
        for (int i = 0; i < x.Length; i++)
        {
            float p = x[i];
            int want = F.Encode(p), scalar = E5M6Fast.Encode(p);
            if (float.IsNaN(p))
            {
                Assert.True(float.IsNaN(F.Decode(scalar)) && float.IsNaN(F.Decode(vector[i])), $"NaN at {i}");
                continue;
            }
            Assert.True(want == scalar, $"{p:R} (0x{BitConverter.SingleToUInt32Bits(p):X8}): definition {want:X3}, scalar {scalar:X3}");
            Assert.True(want == vector[i], $"{p:R} (0x{BitConverter.SingleToUInt32Bits(p):X8}): definition {want:X3}, vector {vector[i]:X3}");
        }
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(65024f)]
    [InlineData(65025f)]
    [InlineData(3e-3f)]
    [InlineData(1e-38f)]
    public void ScalesArePowersOfTwoThatFitTheTile(float amax)
    {
        float s = E5M6Tiles.PowerOfTwoScale(amax);
        Assert.Equal(0, BitConverter.SingleToInt32Bits(s) & 0x7FFFFF);            // a power of two
        Assert.True(amax / (double)s <= F.MaxFinite, $"{amax} / {s}");
        Assert.True(s <= 2.0e-38 || amax / (double)s > F.MaxFinite / 2, $"{s} is not the smallest for {amax}");
    }

    [Fact]
    public void TheCacheRoundTripsAtSixMantissaBitsWithPartialTiles()
    {
        var rng = new Random(3);
        int rows = 5, cols = 300;                                  // 128 + 128 + 44: a partial last tile
        var x = new float[rows * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-3, 3)));
        x[7] = 0f;
        for (int c = 128; c < 256; c++) x[2 * cols + c] = 0f;      // an all-zero tile
        var be = DeepSeekSharp.Kernels.Cpu.CpuBackend.Default;
        var t = E5M6Tiles.Quantize(be, x, rows, cols);
        var back = new float[x.Length];
        t.Dequantize(be, back);
        for (int i = 0; i < x.Length; i++)
        {
            // Relative error of a 6-bit mantissa (half an ulp: 2^-7) above the subnormal range of the tile.
            Assert.True(Math.Abs(back[i] - x[i]) <= Math.Abs(x[i]) * (1.0 / 128) + 1e-30, $"{i}: {x[i]} -> {back[i]}");
        }
        Assert.Equal(0f, back[7]);
        t.Return();
        var bad = (float[])x.Clone();
        bad[400] = float.NaN;
        var error = Assert.Throws<DeepSeekSharpException>(() => E5M6Tiles.Quantize(be, bad, rows, cols, "o_proj input"));
        Assert.Contains("o_proj input", error.Message);
    }
}
