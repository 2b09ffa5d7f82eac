using System.Buffers.Binary;
using System.Text;
using DeepSeekSharp.IO.TensorBoard;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

public class TrainingPiecesTests
{
    [Fact]
    public void MaskedCrcMatchesTheTensorFlowTestVector()
    {
        Assert.Equal(0x5794d08au, EventFileWriter.MaskedCrc(Encoding.ASCII.GetBytes("\u001a\u0011CRC test, one two")));
    }

    [Fact]
    public void EventFileRecordsAreFramedAndCarryTheScalar()
    {
        string dir = TestPaths.TempDir();
        string file;
        using (var w = new EventFileWriter(dir))
        {
            w.Scalar("train/loss", 2.5f, 7);
            file = w.FilePath;
        }
        var bytes = File.ReadAllBytes(file);
        int pos = 0, records = 0;
        byte[] last = [];
        while (pos < bytes.Length)
        {
            ulong len = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(pos));
            Assert.Equal(EventFileWriter.MaskedCrc(bytes.AsSpan(pos, 8)), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos + 8)));
            last = bytes.AsSpan(pos + 12, (int)len).ToArray();
            Assert.Equal(EventFileWriter.MaskedCrc(last), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos + 12 + (int)len)));
            pos += 12 + (int)len + 4;
            records++;
        }
        Assert.Equal(2, records);
        // The scalar event holds the tag, step 7 (field 2 varint) and the float 2.5 (field 2, fixed32, inside Value).
        Assert.Contains("train/loss", Encoding.UTF8.GetString(last));
        Assert.True(last.AsSpan().IndexOf(new byte[] { 0x10, 0x07 }) >= 0);
        Assert.True(last.AsSpan().IndexOf(BitConverter.GetBytes(2.5f)) >= 0);
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("cosine")]
    [InlineData("wsd")]
    [InlineData("deepseek")]
    [InlineData("constant")]
    public void SchedulesWarmUpThenStayWithinPeakAndFloor(string kind)
    {
        var s = new LrSchedule(kind, 1e-3f, 10, 1000, 0.1f);
        Assert.Equal(1e-4f, s.At(1), 6);
        Assert.Equal(1e-3f, s.At(10), 6);
        for (int step = 11; step <= 1000; step++) Assert.InRange(s.At(step), 1e-3f * 7.3f / 220f - 1e-9f, 1e-3f + 1e-9f);
        if (kind == "cosine") Assert.Equal(1e-4f, s.At(1000), 6);
        if (kind == "deepseek")
        {
            Assert.Equal(1e-3f, s.At(600), 6);                  // constant phase
            Assert.Equal(1e-4f, s.At(970), 6);                  // first tail 0.1×
            Assert.Equal(1e-3f * 7.3f / 220f, s.At(995), 6);    // second tail
        }
    }

    [Fact]
    public void BiasRuleMovesUnderloadedExpertsUp()
    {
        var counts = new long[] { 10, 0, 5, 5 };
        Assert.Equal(1f, BiasBalancer.MaxVio(counts), 5); // (10 − 5) / 5
    }

    [Fact]
    public void UnknownConfigKeyIsAOneLineError()
    {
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => TrainConfig.Load(null, ["learnig_rate=1"]));
        Assert.Contains("learnig_rate", e.Message);
        string yaml = Path.Combine(TestPaths.TempDir(), "bad.yaml");
        File.WriteAllText(yaml, "sequence_len: [1, 2\n");
        e = Assert.ThrowsAny<DeepSeekSharpException>(() => TrainConfig.Load(yaml, []));
        Assert.Contains("bad.yaml", e.Message);
        e = Assert.ThrowsAny<DeepSeekSharpException>(() => TrainConfig.Load(null, ["sequence_len=abc"]));
        Assert.Contains("sequence_len", e.Message);
    }

    [Fact]
    public void SetOverridesTheYamlInOrder()
    {
        string yaml = Path.Combine(TestPaths.TempDir(), "ok.yaml");
        File.WriteAllText(yaml, "sequence_len: 64\nseed: 1\ndatasets:\n  - path: a.txt\n    type: text\n");
        var cfg = TrainConfig.Load(yaml, ["seed=7", "sequence_len=32", "seed=9"]);
        Assert.Equal(32, cfg.SequenceLen);
        Assert.Equal(9, cfg.Seed);
        Assert.Equal("a.txt", cfg.Datasets.Single().Path);
    }
}

public class PrecisionTests
{
    [Fact]
    public void Bf16ComputeUsesBf16WeightsWithStraightThroughGradients()
    {
        var model = DeepSeekSharp.Models.DeepSeekV3.ModelCheckpoint.Load(TestPaths.Fixture("v2-lite-tiny"));
        int[] tokens = [3, 1, 4, 1, 5, 9, 2, 6];
        var batch = DeepSeekSharp.Models.DeepSeekV3.SequenceBatch.Training(1, tokens.Length);
        var full = LanguageModelLoss.Compute(model, tokens, batch, 0, 0).Total.Data[0];
        foreach (var (_, m) in model.NamedModules())
            if (m is DeepSeekSharp.Nn.Linear l) l.Bf16Compute = true;
        model.ZeroGrad();
        var loss = LanguageModelLoss.Compute(model, tokens, batch, 0, 0);
        DeepSeekSharp.Autograd.Backprop.Backward(loss.Total);
        Assert.NotEqual(full, loss.Total.Data[0]);                       // the rounding is applied...
        Assert.True(Math.Abs(full - loss.Total.Data[0]) < 0.01 * full);  // ...and only at bf16's ~3 significant digits
        Assert.NotNull(model.NamedParameters().First(p => p.Name.EndsWith("o_proj.weight")).Parameter.Grad);
        // Master weights stay fp32 (not rounded in place).
        Assert.Contains(model.NamedParameters().First(p => p.Name.EndsWith("o_proj.weight")).Parameter.Data,
            w => DeepSeekSharp.Tensors.NumericFormats.Bf16ToFloat(DeepSeekSharp.Tensors.NumericFormats.FloatToBf16(w)) != w);
    }
}
