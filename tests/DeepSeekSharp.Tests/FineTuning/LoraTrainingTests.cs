using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tests.Training;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// <c>dss train</c> with <c>adapter: lora</c>: the base stays bit-identical, the optimizer state holds only the LoRA
/// tensors, the checkpoints are PEFT adapter folders, and a resumed run ends bit-identical to an uninterrupted one.
/// </summary>
public sealed class LoraTrainingTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private string BaseModel() => TinyRun.BaseCheckpoint(_dir);

    private string[] Lora(string baseModel, string output, params string[] extra) =>
        TinyRun.Settings(TinyRun.Corpus(_dir), output, ["model_preset=null", $"base_model={baseModel}", "adapter=lora", "lora_r=4", "lora_alpha=8",
            "lora_target_modules=[q_a_proj, kv_b_proj, o_proj, shared_experts, mlp.experts.*.down_proj]", "learning_rate=1e-2", .. extra]);

    [Fact]
    public void BaseStaysBitIdenticalAndCheckpointsArePeftAdapterFolders()
    {
        string baseModel = BaseModel(), output = Path.Combine(_dir, "lora");
        var logs = new List<string>();
        TinyRun.Train(Lora(baseModel, output, "max_steps=3", "save_steps=3"), log: logs.Add);
        Assert.Contains(logs, l => l.StartsWith("lora: LoRA on ", StringComparison.Ordinal) && l.Contains(" trainable parameters of "));
        string checkpoint = Path.Combine(output, "checkpoint-3");
        Assert.True(File.Exists(Path.Combine(checkpoint, LoraAdapters.ConfigFile)));
        Assert.False(File.Exists(Path.Combine(checkpoint, "model.safetensors")));
        using (var adapter = SafeTensorsReader.Open(Path.Combine(checkpoint, LoraAdapters.WeightsFile)))
        {
            Assert.All(adapter.Tensors, t => Assert.Matches(@"^base_model\.model\.model\.layers\.\d+\..*\.lora_[AB]\.weight$", t.Name));
            Assert.Contains(adapter.Tensors, t => t.Name.EndsWith("lora_B.weight", StringComparison.Ordinal) && adapter.ReadFloat32(t.Name).Any(v => v != 0));
            using var optimizer = SafeTensorsReader.Open(Path.Combine(checkpoint, CheckpointStore.OptimizerFile));
            Assert.Equal(2 * adapter.Tensors.Count, optimizer.Tensors.Count);
            Assert.All(optimizer.Tensors, t => Assert.Contains(".lora_", t.Name));
        }

        // The base model the run read is untouched, and loading base + adapter gives a model whose base weights are the base's.
        var loaded = ModelCheckpoint.Load(baseModel);
        LoraAdapters.Load(loaded, checkpoint);
        using var before = SafeTensorsReader.Open(Path.Combine(baseModel, "model.safetensors"));
        var parameters = loaded.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        foreach (var entry in before.Tensors)
            if (parameters.TryGetValue(entry.Name, out var p)) Assert.Equal(before.ReadFloat32(entry.Name), p.Span.ToArray());
    }

    [Theory]
    [InlineData("lora_dropout=0")]
    [InlineData("lora_dropout=0.3", "gradient_accumulation_steps=2")]
    public void ResumedLoraRunEqualsAnUninterruptedOne(params string[] settings)
    {
        string baseModel = BaseModel(), straight = Path.Combine(_dir, "straight"), split = Path.Combine(_dir, "split");
        TinyRun.Train(Lora(baseModel, straight, ["max_steps=4", "save_steps=4", .. settings]));
        TinyRun.Train(Lora(baseModel, split, ["max_steps=4", "save_steps=4", .. settings]), new TrainOptions(StopAtStep: 2));
        TinyRun.Train(Lora(baseModel, split, ["max_steps=4", "save_steps=4", .. settings]), new TrainOptions(ResumeDir: split));
        foreach (var file in new[] { LoraAdapters.WeightsFile, CheckpointStore.OptimizerFile })
            Assert.Equal(File.ReadAllBytes(Path.Combine(straight, "checkpoint-4", file)), File.ReadAllBytes(Path.Combine(split, "checkpoint-4", file)));
    }

    [Fact]
    public void DropoutActsOnTrainingAndIsRecordedInTheAdapterConfig()
    {
        string baseModel = BaseModel(), plain = Path.Combine(_dir, "plain"), dropped = Path.Combine(_dir, "dropped");
        TinyRun.Train(Lora(baseModel, plain, "max_steps=2", "save_steps=2"));
        TinyRun.Train(Lora(baseModel, dropped, "max_steps=2", "save_steps=2", "lora_dropout=0.5"));
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(plain, "checkpoint-2", LoraAdapters.WeightsFile)),
            File.ReadAllBytes(Path.Combine(dropped, "checkpoint-2", LoraAdapters.WeightsFile)));
        Assert.Equal(0.5f, LoraAdapters.Load(ModelCheckpoint.Load(baseModel), Path.Combine(dropped, "checkpoint-2")).Dropout.P);
    }

    [Theory]
    [InlineData("lora_r=0", "lora_r")]
    [InlineData("lora_target_modules=[nothing_like_this]", "matches no Linear")]
    [InlineData("lora_dropout=1.5", "lora_dropout")]
    public void BadLoraConfigIsOneClearLine(string setting, string message)
    {
        string baseModel = BaseModel(), output = Path.Combine(_dir, "bad");
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(Lora(baseModel, output, "max_steps=1", setting)));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
