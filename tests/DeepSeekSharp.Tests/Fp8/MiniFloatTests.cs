using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Tests.Fp8;

/// <summary>Exhaustive codec tests: every code both ways, and every float32 neighbourhood of every rounding boundary.</summary>
public class MiniFloatTests
{
    public static TheoryData<string> Formats => new() { "E4M3", "E5M2", "E5M6" };

    private static MiniFloat Get(string name) => name switch { "E4M3" => MiniFloat.E4M3, "E5M2" => MiniFloat.E5M2, _ => MiniFloat.E5M6 };

    /// <summary>The value of a code straight from the OCP FP8 / IEEE definitions (independent of the codec).</summary>
    private static double Reference(string name, int code)
    {
        int e = name == "E4M3" ? 4 : 5, m = name switch { "E4M3" => 3, "E5M2" => 2, _ => 6 }, bias = name == "E4M3" ? 7 : 15;
        int sign = (code >> (e + m)) & 1, exp = (code >> m) & ((1 << e) - 1), man = code & ((1 << m) - 1);
        double s = sign == 1 ? -1 : 1;
        if (name == "E4M3" && exp == 15 && man == 7) return double.NaN;
        if (name != "E4M3" && exp == (1 << e) - 1) return man == 0 ? s * double.PositiveInfinity : double.NaN;
        return exp == 0 ? s * Math.Pow(2, 1 - bias) * (man / Math.Pow(2, m)) : s * Math.Pow(2, exp - bias) * (1 + man / Math.Pow(2, m));
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void EveryCodeDecodesToItsDefinitionAndEncodesBack(string name)
    {
        var f = Get(name);
        for (int code = 0; code < 1 << f.Bits; code++)
        {
            double want = Reference(name, code);
            float got = f.Decode(code);
            if (double.IsNaN(want)) { Assert.True(float.IsNaN(got), $"{name} code {code:X}"); Assert.True(float.IsNaN(f.Decode(f.Encode(got)))); continue; }
            Assert.Equal(want, got);
            if (double.IsInfinity(want)) { Assert.Equal(f.MaxFinite * Math.Sign(want), f.Decode(f.Encode(got))); continue; } // saturating
            Assert.Equal(code, f.Encode(got));
        }
        Assert.Equal(name switch { "E4M3" => 448f, "E5M2" => 57344f, _ => 65024f }, f.MaxFinite);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void RoundingBoundariesGoToNearestWithTiesToEven(string name)
    {
        var f = Get(name);
        var values = Enumerable.Range(0, 1 << f.Bits).Select(c => (Code: c, Value: f.Decode(c)))
            .Where(x => float.IsFinite(x.Value) && x.Value >= 0 && !(x.Value == 0 && x.Code != 0)).OrderBy(x => x.Value).ToList();
        for (int i = 0; i + 1 < values.Count; i++)
        {
            var (lo, hi) = (values[i], values[i + 1]);
            float mid = (float)(((double)lo.Value + hi.Value) / 2); // exact in float32 for these formats
            int even = (lo.Code & 1) == 0 ? lo.Code : hi.Code;
            Assert.Equal(even, f.Encode(mid));
            Assert.Equal(lo.Code, f.Encode(MathF.BitDecrement(mid)));
            Assert.Equal(hi.Code, f.Encode(MathF.BitIncrement(mid)));
            Assert.Equal(lo.Code, f.Encode(MathF.BitIncrement(lo.Value)));
            Assert.Equal(hi.Code, f.Encode(MathF.BitDecrement(hi.Value)));
            // Negative side mirrors with the sign bit.
            int signBit = 1 << (f.Bits - 1);
            Assert.Equal(even | signBit, f.Encode(-mid));
            Assert.Equal(lo.Code | signBit, f.Encode(-MathF.BitDecrement(mid)));
        }
        // Saturation above the largest finite value, infinities included; NaN stays NaN.
        Assert.Equal(f.MaxCode, f.Encode(MathF.BitIncrement(f.MaxFinite)));
        Assert.Equal(f.MaxCode, f.Encode(f.MaxFinite * 4));
        Assert.Equal(f.MaxCode, f.Encode(float.PositiveInfinity));
        Assert.Equal(f.MaxCode | (1 << (f.Bits - 1)), f.Encode(float.NegativeInfinity));
        Assert.True(float.IsNaN(f.Decode(f.Encode(float.NaN))));
        Assert.Equal(1 << (f.Bits - 1), f.Encode(-0f));
        Assert.Equal(0, f.Encode(float.Epsilon));
    }

    [Fact]
    public void MatchesTheE4M3DecoderOfTheCheckpointReader()
    {
        for (int c = 0; c < 256; c++)
        {
            float a = MiniFloat.E4M3.Decode(c), b = DeepSeekSharp.Tensors.NumericFormats.E4M3ToFloat((byte)c);
            Assert.True(a.Equals(b) || (float.IsNaN(a) && float.IsNaN(b)));
        }
    }
}

public class E4M3FastTests
{
    [Fact]
    public void FastEncoderAgreesWithTheDefinitionEverywhere()
    {
        var f = MiniFloat.E4M3;
        // Every code's value and both float32 neighbours, every midpoint and its neighbours...
        var probes = new List<float>();
        for (int c = 0; c < 256; c++)
        {
            float v = f.Decode(c);
            if (!float.IsFinite(v)) continue;
            probes.AddRange([v, MathF.BitIncrement(v), MathF.BitDecrement(v)]);
            float next = f.Decode(Math.Min(c + 1, 0x7E));
            float mid = (v + next) / 2;
            probes.AddRange([mid, MathF.BitIncrement(mid), MathF.BitDecrement(mid)]);
        }
        // ...plus random floats across the whole exponent range and specials.
        var rng = new Random(11);
        for (int i = 0; i < 200_000; i++) probes.Add(BitConverter.Int32BitsToSingle(rng.Next(int.MinValue, int.MaxValue)));
        probes.AddRange([0f, -0f, float.Epsilon, 448f, 464f, 1e9f, float.PositiveInfinity, float.NegativeInfinity, float.NaN]);
        foreach (float p in probes)
        {
            int want = f.Encode(p);
            int got = E4M3Fast.Encode(p);
            if (float.IsNaN(p)) Assert.True(float.IsNaN(f.Decode(got)));
            else Assert.True(want == got, $"{p:R} (0x{BitConverter.SingleToUInt32Bits(p):X8}): definition {want:X2}, fast {got:X2}");
        }
    }
}

public class E4M3VectorDecodeTests
{
    [Fact]
    public void VectorDecodeMatchesTheTableForEveryCodeAndTail()
    {
        var codes = Enumerable.Range(0, 256).Select(c => (byte)c).Concat(new byte[] { 1, 2, 3, 0x7F, 0xFF, 0x80, 0x08 }).ToArray();
        var got = new float[codes.Length];
        E4M3Fast.DecodeScaled(codes, 0.75f, got);
        for (int i = 0; i < codes.Length; i++)
        {
            float want = MiniFloat.E4M3.Decode(codes[i]) * 0.75f;
            Assert.True(want.Equals(got[i]) || (float.IsNaN(want) && float.IsNaN(got[i])), $"code {codes[i]:X2}: {want} vs {got[i]}");
        }
    }
}

public class E4M3VectorEncodeTests
{
    [Theory]
    [InlineData(1f)]
    [InlineData(0.0371f)]
    [InlineData(3.5e-4f)]
    public void BulkEncoderAgreesWithTheDefinitionOnEveryBoundaryAndRandomFloats(float scale)
    {
        var f = MiniFloat.E4M3;
        var probes = new List<float>();
        for (int c = 0; c < 256; c++)
        {
            float v = f.Decode(c);
            if (!float.IsFinite(v)) continue;
            float next = f.Decode(Math.Min(c + 1, 0x7E));
            float mid = (v + next) / 2;
            // Probe the neighbourhood of every code and every rounding boundary, as seen after the division by the scale.
            foreach (float p in new[] { v, mid })
                probes.AddRange([p * scale, MathF.BitIncrement(p * scale), MathF.BitDecrement(p * scale), p, MathF.BitIncrement(p), MathF.BitDecrement(p)]);
        }
        var rng = new Random(5);
        for (int i = 0; i < 100_000; i++) probes.Add(BitConverter.Int32BitsToSingle(rng.Next(int.MinValue, int.MaxValue)));
        probes.AddRange([0f, -0f, float.Epsilon, 448f, -464f, 1e9f, float.PositiveInfinity, float.NegativeInfinity, float.NaN]);
        var x = probes.ToArray();
        var scales = Enumerable.Repeat(scale, x.Length).ToArray();
        var codes = new byte[x.Length];
        var values = new float[x.Length];
        E4M3Fast.EncodeDivided(x, scales, codes, values);
        for (int i = 0; i < x.Length; i++)
        {
            float scaled = x[i] / scale;
            int want = f.Encode(scaled);
            if (float.IsNaN(scaled))
            {
                Assert.True(float.IsNaN(f.Decode(codes[i])) && float.IsNaN(values[i]), $"NaN at {i}");
                continue;
            }
            Assert.True(want == codes[i], $"{x[i]:R} / {scale}: definition {want:X2}, bulk {codes[i]:X2}");
            Assert.Equal(f.Decode(want) * scale, values[i]);
        }
    }
}

public class Fp8TilingTests
{
    [Theory]
    [InlineData(1, 128)]
    [InlineData(128, 1)]
    [InlineData(128, 128)]
    public void QuantiseAndDequantiseOnTheBackendFollowTheTileDefinition(int tileRows, int tileCols)
    {
        int rows = 300, cols = 200; // partial tiles both ways
        var rng = new Random(tileRows * 7 + tileCols);
        var x = new float[rows * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 3)));
        var be = DeepSeekSharp.Kernels.Cpu.CpuBackend.Default;
        var q = Fp8Quantizer.Allocate(rows, cols, tileRows, tileCols);
        var fused = new float[x.Length];
        be.QuantizeE4M3(x, rows, cols, tileRows, tileCols, q.Codes, q.Scales, fused);
        var back = new float[x.Length];
        Fp8Quantizer.Dequantize(be, q, back);
        int tc = (cols + tileCols - 1) / tileCols;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                // Scale from the definition: amax of the tile / 448; code = E4M3(x / s).
                int r0 = r / tileRows * tileRows, c0 = c / tileCols * tileCols;
                float amax = 0;
                for (int i = r0; i < Math.Min(rows, r0 + tileRows); i++)
                    for (int j = c0; j < Math.Min(cols, c0 + tileCols); j++) amax = Math.Max(amax, Math.Abs(x[i * cols + j]));
                float s = amax == 0 ? 1f : amax / 448f;
                Assert.Equal(s, q.Scales[r / tileRows * tc + c / tileCols]);
                int code = MiniFloat.E4M3.Encode(x[r * cols + c] / s);
                Assert.Equal(code, q.Codes[r * cols + c]);
                float value = MiniFloat.E4M3.Decode(code) * s;
                Assert.Equal(value, back[r * cols + c]);
                Assert.Equal(value, fused[r * cols + c]);
            }
    }
}
