using DeepSeekSharp.Autograd;
using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.IO;

public class HfCheckpointTests
{
    private static float[] Logits(DeepSeekModel m, int[] tokens)
    {
        using var _ = GradMode.NoGrad();
        return m.Forward(tokens, SequenceBatch.Training(1, tokens.Length), 1).Logits.Span.ToArray();
    }

    [Fact]
    public void ShardedF32SaveLoadsBackIdentically()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        string dir = TestPaths.TempDir();
        ModelCheckpoint.Save(model, dir, DType.F32, maxShardBytes: 64 * 1024);
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors.index.json")));
        Assert.True(Directory.GetFiles(dir, "model-*-of-*.safetensors").Length > 3);
        var again = ModelCheckpoint.Load(dir);
        foreach (var ((name, a), (_, b)) in model.NamedParameters().Zip(again.NamedParameters()))
            Assert.True(a.Span.SequenceEqual(b.Span), name);
        int[] tokens = [3, 1, 4, 1, 5, 9, 2, 6];
        Assert.Equal(Logits(model, tokens), Logits(again, tokens));
        // Both copies of the shared embedding/head are written for the MTP layer (HF layout).
        using var reader = HfCheckpointReader.Open(dir, (128, 128));
        Assert.True(reader.Contains("model.layers.3.embed_tokens.weight"));
        Assert.True(reader.Contains("model.layers.3.shared_head.head.weight"));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Bf16SaveRoundsEachWeightToNearestBf16()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v2-lite-tiny"));
        string dir = TestPaths.TempDir();
        ModelCheckpoint.Save(model, dir, DType.BF16);
        var again = ModelCheckpoint.Load(dir);
        foreach (var ((name, a), (_, b)) in model.NamedParameters().Zip(again.NamedParameters()))
            for (int i = 0; i < a.Length; i++)
            {
                float want = NumericFormats.Bf16ToFloat(NumericFormats.FloatToBf16(a.Data[i]));
                Assert.True(want == b.Data[i], $"{name}[{i}]");
                Assert.True(Math.Abs(a.Data[i] - b.Data[i]) <= Math.Abs(a.Data[i]) / 256, $"{name}[{i}] rounding error too large");
            }
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Fp8CodesDecodeToTheFormatDefinition()
    {
        // E4M3FN: bias 7, no infinities, S.1111.111 = NaN, max 448; E5M2: IEEE-like with inf/NaN.
        Assert.Equal(448f, NumericFormats.E4M3ToFloat(0x7E));
        Assert.True(float.IsNaN(NumericFormats.E4M3ToFloat(0x7F)));
        Assert.True(float.IsNaN(NumericFormats.E4M3ToFloat(0xFF)));
        Assert.Equal(MathF.Pow(2, -9), NumericFormats.E4M3ToFloat(0x01)); // smallest subnormal
        Assert.Equal(-1f, NumericFormats.E4M3ToFloat(0xB8));
        Assert.Equal(57344f, NumericFormats.E5M2ToFloat(0x7B));
        Assert.True(float.IsPositiveInfinity(NumericFormats.E5M2ToFloat(0x7C)));
        Assert.True(float.IsNaN(NumericFormats.E5M2ToFloat(0x7D)));
        // Every finite E4M3 value is distinct and ordered by code within a sign.
        for (int code = 1; code < 0x7F; code++) Assert.True(NumericFormats.E4M3ToFloat((byte)code) > NumericFormats.E4M3ToFloat((byte)(code - 1)));
    }

    [Fact]
    public void Bf16RoundsToNearestEven()
    {
        Assert.Equal(0x3F80, NumericFormats.FloatToBf16(1f));
        Assert.Equal(0x3F80, NumericFormats.FloatToBf16(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even (down)
        Assert.Equal(0x3F82, NumericFormats.FloatToBf16(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie → even (up)
        Assert.Equal(0x3F81, NumericFormats.FloatToBf16(BitConverter.UInt32BitsToSingle(0x3F808001)));
        Assert.True(float.IsNaN(NumericFormats.Bf16ToFloat(NumericFormats.FloatToBf16(float.NaN))));
    }
}
