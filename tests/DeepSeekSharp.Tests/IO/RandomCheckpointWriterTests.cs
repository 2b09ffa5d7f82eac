using DeepSeekSharp.Fp8;
using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.IO;

/// <summary>
/// The streamed random init (<c>dss init</c>) against the in-memory one: the same values for the same seed, written as
/// the in-memory model's writer and the FP8 quantiser (itself bitwise equal to the PyTorch reference quantiser) write them.
/// </summary>
public class RandomCheckpointWriterTests
{
    private const int Seed = 11;

    // tiny-v3 has dense and MoE layers, routing biases (buffers) and an MTP layer (copies of the embedding and head).
    private static string Json => Presets.TinyV3;

    private static string InMemory(DType dtype)
    {
        var model = new DeepSeekModel(DeepSeekConfig.Parse(Json), materialize: true);
        ModelInit.InitializeRandom(model, Seed);
        string dir = TestPaths.TempDir();
        ModelCheckpoint.WriteFiles(model, dir, dtype, configJson: Json);
        return dir;
    }

    private static string Streamed(CheckpointDType dtype)
    {
        string dir = TestPaths.TempDir();
        RandomCheckpointWriter.Write(dir, Json, dtype, Seed);
        return dir;
    }

    [Theory]
    [InlineData(CheckpointDType.F32, DType.F32)]
    [InlineData(CheckpointDType.Bf16, DType.BF16)]
    public void StreamedInitWritesTheInMemoryInitsFileByteForByte(CheckpointDType streamed, DType inMemory)
    {
        string a = InMemory(inMemory), b = Streamed(streamed);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "model.safetensors")), File.ReadAllBytes(Path.Combine(b, "model.safetensors")));
        Assert.Equal(File.ReadAllText(Path.Combine(a, "config.json")), File.ReadAllText(Path.Combine(b, "config.json")));
        var model = ModelCheckpoint.Load(b);
        Assert.True(model.MtpModules.Count > 0);
    }

    [Fact]
    public void StreamedFp8InitEqualsQuantisingTheFp32Init()
    {
        string fp32 = Streamed(CheckpointDType.F32), quantized = Path.Combine(TestPaths.TempDir(), "q");
        Fp8Checkpoint.Quantize(fp32, quantized, DType.BF16);
        string fp8 = Streamed(CheckpointDType.Fp8);
        Assert.Equal(File.ReadAllBytes(Path.Combine(quantized, "model.safetensors")), File.ReadAllBytes(Path.Combine(fp8, "model.safetensors")));
        var config = DeepSeekConfig.Load(Path.Combine(fp8, "config.json"));
        Assert.NotNull(config.QuantizationConfig);
        Assert.Equal("bfloat16", config.TorchDtype);
        // Loads both ways: widened to fp32, and with the codes kept.
        Assert.NotNull(ModelCheckpoint.Load(fp8));
        var kept = DeepSeekSharp.Inference.InferenceWeights.Load(fp8, WeightStorage.Fp8Block);
        Assert.Contains(Fp8Checkpoint.Fp8Linears(kept), l => l.Linear.InferenceWeight is { Storage: WeightStorage.Fp8Block });
    }

    [Fact]
    public void ProgressReachesTheTotal()
    {
        var reports = new List<RandomCheckpointWriter.Progress>();
        RandomCheckpointWriter.Write(TestPaths.TempDir(), Json, CheckpointDType.Fp8, Seed, reports.Add);
        Assert.NotEmpty(reports);
        Assert.Equal(reports[^1].Total, reports[^1].Written);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.First.Written <= p.Second.Written));
    }
}
