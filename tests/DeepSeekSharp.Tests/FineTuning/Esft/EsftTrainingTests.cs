using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.FineTuning.Esft;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Training;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning.Esft;

/// <summary>
/// <c>dss train</c> with <c>esft</c>: only the selected routed experts move; the router, its bias, attention and the
/// shared expert stay bit-identical; AdamW holds moments for the selected experts only; gradients go through the
/// grouped-experts op with no buffer for frozen experts; adapter checkpoints hold exactly the trained tensors.
/// </summary>
public sealed class EsftTrainingTests
{
    private readonly string _dir = TestPaths.TempDir();

    // tiny-v3: layer 0 dense, layers 1-3 MoE with 16 routed experts, the MTP layer 4.
    private const string Selection = "{\"experts\": {\"1\": [0, 3], \"2\": [5]}, \"shared_experts\": false, \"non_expert_modules\": false}";

    private string BaseModel()
    {
        string baseRun = Path.Combine(_dir, "base");
        TinyRun.Train(TinyRun.Settings(TinyRun.Corpus(_dir), baseRun, "max_steps=2", "save_steps=2"));
        return Path.Combine(baseRun, "checkpoint-2");
    }

    private string ExpertConfigFile(string json = Selection)
    {
        string path = Path.Combine(_dir, $"experts-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        return path;
    }

    private string[] Esft(string baseModel, string output, params string[] extra) =>
        TinyRun.Settings(TinyRun.Corpus(_dir), output, ["model_preset=null", $"base_model={baseModel}", "max_steps=3", "save_steps=3", "learning_rate=1e-2", .. extra]);

    [Fact]
    public void OnlySelectedExpertsMoveAndHoldOptimizerState()
    {
        string baseModel = BaseModel(), output = Path.Combine(_dir, "esft");
        var logs = new List<string>();
        TinyRun.Train(Esft(baseModel, output, $"esft={ExpertConfigFile()}"), log: logs.Add);
        Assert.Contains(logs, l => l.StartsWith("esft: 3 routed expert(s) train in 2 layer(s)", StringComparison.Ordinal));
        string checkpoint = Path.Combine(output, "checkpoint-3");
        Assert.Equal(Selection, File.ReadAllText(Path.Combine(checkpoint, EsftTraining.SelectionFile)));

        using var before = SafeTensorsReader.Open(Path.Combine(baseModel, "model.safetensors"));
        using var after = SafeTensorsReader.Open(Path.Combine(checkpoint, "model.safetensors"));
        bool Same(string name) => before.ReadFloat32(name).SequenceEqual(after.ReadFloat32(name));
        foreach (var name in new[]
        {
            "model.layers.1.mlp.experts.1.gate_proj.weight", "model.layers.1.mlp.experts.1.down_proj.weight", "model.layers.3.mlp.experts.0.up_proj.weight",
            "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias", "model.layers.2.mlp.gate.e_score_correction_bias",
            "model.layers.1.self_attn.q_a_proj.weight", "model.layers.1.mlp.shared_experts.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
            "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
        })
            Assert.True(Same(name), $"{name} changed");
        foreach (var name in new[] { "model.layers.1.mlp.experts.0.gate_proj.weight", "model.layers.1.mlp.experts.3.down_proj.weight", "model.layers.2.mlp.experts.5.up_proj.weight" })
            Assert.False(Same(name), $"{name} did not move");

        using var optimizer = SafeTensorsReader.Open(Path.Combine(checkpoint, CheckpointStore.OptimizerFile));
        var expected = new[] { "1.mlp.experts.0", "1.mlp.experts.3", "2.mlp.experts.5" }
            .SelectMany(e => new[] { "gate_proj", "up_proj", "down_proj" }.SelectMany(p => new[] { $"m.model.layers.{e}.{p}.weight", $"v.model.layers.{e}.{p}.weight" }));
        Assert.Equal(expected.Order(), optimizer.Tensors.Select(t => t.Name).Order());
    }

    [Fact]
    public void GradientsFlowThroughTheGroupedOpAndFrozenExpertsGetNoBuffer()
    {
        var model = ModelCheckpoint.Load(BaseModel());
        var experts = ExpertConfig.Read(ExpertConfigFile());
        var freezing = EsftTraining.Freeze(model, experts);
        Assert.Equal(9, freezing.TrainableTensors);
        long calls = GroupedExpertsOp.Calls;
        var tokens = Enumerable.Range(0, 64).Select(i => (i * 37 + 11) % 256).ToArray();
        using (TensorScope.Begin())
        {
            var loss = LanguageModelLoss.Compute(model, tokens, SequenceBatch.Training(2, 32), 0.3f, 1);
            Backprop.Backward(loss.Total);
        }
        Assert.True(GroupedExpertsOp.Calls >= calls + 4, "the MoE layers (3 + MTP) did not take the grouped-experts op");
        foreach (var (name, p) in model.NamedParameters())
        {
            bool trained = name.StartsWith("model.layers.1.mlp.experts.0.", StringComparison.Ordinal) || name.StartsWith("model.layers.1.mlp.experts.3.", StringComparison.Ordinal)
                || name.StartsWith("model.layers.2.mlp.experts.5.", StringComparison.Ordinal);
            Assert.Equal(trained, p.RequiresGrad);
            if (trained) Assert.True(p.Grad is not null && p.Grad.Any(v => v != 0), $"{name} has no gradient");
            else Assert.True(p.Grad is null, $"{name} got a gradient buffer");
        }
    }

    [Fact]
    public void SoftmaxRoutingWithSharedExpertsTrainsTheSelectionAndTheSharedExperts()
    {
        // v2-lite-tiny: V2-Lite's softmax routing without normalisation; MoE layers 1 and 2 with 2 shared experts.
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v2-lite-tiny"));
        var experts = ExpertConfig.Read(ExpertConfigFile("{\"experts\": {\"1\": [4], \"2\": [0, 6]}, \"shared_experts\": true, \"non_expert_modules\": false}"));
        experts.Validate(model.Config, "test");
        EsftTraining.Freeze(model, experts);
        var tokens = Enumerable.Range(0, 24).Select(i => (i * 29 + 5) % 128).ToArray();
        using (TensorScope.Begin())
            Backprop.Backward(LanguageModelLoss.Compute(model, tokens, SequenceBatch.Training(1, 24), 0f, 0).Total);
        foreach (var (name, p) in model.NamedParameters())
        {
            bool trained = name.Contains(".mlp.shared_experts.", StringComparison.Ordinal) || name.StartsWith("model.layers.1.mlp.experts.4.", StringComparison.Ordinal)
                || name.StartsWith("model.layers.2.mlp.experts.0.", StringComparison.Ordinal) || name.StartsWith("model.layers.2.mlp.experts.6.", StringComparison.Ordinal);
            Assert.True(trained == p.RequiresGrad, name);
            Assert.True(trained == p.Grad is not null, $"{name}: gradient buffer {(p.Grad is null ? "missing" : "present")}");
        }
    }

    [Fact]
    public void AdapterCheckpointHoldsExactlyTheTrainedExperts()
    {
        string baseModel = BaseModel(), full = Path.Combine(_dir, "full"), adapter = Path.Combine(_dir, "adapter");
        string config = ExpertConfigFile();
        TinyRun.Train(Esft(baseModel, full, $"esft={config}"));
        TinyRun.Train(Esft(baseModel, adapter, $"esft={config}", "adapter=esft"));
        string checkpoint = Path.Combine(adapter, "checkpoint-3");
        Assert.Equal(Selection, File.ReadAllText(Path.Combine(checkpoint, EsftAdapter.ConfigFile)));
        Assert.False(File.Exists(Path.Combine(checkpoint, "config.json")));
        using var adapterWeights = SafeTensorsReader.Open(Path.Combine(checkpoint, EsftAdapter.WeightsFile));
        using var fullWeights = SafeTensorsReader.Open(Path.Combine(full, "checkpoint-3", "model.safetensors"));
        Assert.Equal(9, adapterWeights.Tensors.Count);
        // Same run, same math: the adapter's experts are the full checkpoint's, bit for bit.
        foreach (var entry in adapterWeights.Tensors)
        {
            Assert.Matches(@"^model\.layers\.(1\.mlp\.experts\.[03]|2\.mlp\.experts\.5)\.(gate|up|down)_proj\.weight$", entry.Name);
            Assert.Equal(fullWeights.ReadFloat32(entry.Name), adapterWeights.ReadFloat32(entry.Name));
        }

        // Base + adapter is the full checkpoint's model.
        var withAdapter = ModelCheckpoint.Load(baseModel);
        var result = EsftAdapter.Attach(withAdapter, checkpoint);
        Assert.Equal(9, result.Tensors.Count);
        var fullModel = ModelCheckpoint.Load(Path.Combine(full, "checkpoint-3"));
        var parameters = fullModel.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        foreach (var (name, p) in withAdapter.NamedParameters())
            Assert.True(p.Span.SequenceEqual(parameters[name].Span), $"{name} differs");
    }

    [Fact]
    public void AdapterRunKeepsTheFrozenBaseInBf16AndOnlyTheSelectedExpertsInFp32()
    {
        string baseModel = BaseModel(), output = Path.Combine(_dir, "bf16");
        var logs = new List<string>();
        TinyRun.Train(Esft(baseModel, output, $"esft={ExpertConfigFile()}", "adapter=esft", "base_model_precision=bf16", "max_steps=2", "save_steps=2"), log: logs.Add);
        var widened = logs.Where(l => l.StartsWith("base_model_precision: ", StringComparison.Ordinal)).Select(l => l.Split(' ')[1]).Order().ToList();
        var expected = new[] { "1.mlp.experts.0", "1.mlp.experts.3", "2.mlp.experts.5" }
            .SelectMany(e => new[] { "gate_proj", "up_proj", "down_proj" }.Select(p => $"model.layers.{e}.{p}.weight")).Order().ToList();
        Assert.Equal(expected, widened);
        using var adapter = SafeTensorsReader.Open(Path.Combine(output, "checkpoint-2", EsftAdapter.WeightsFile));
        Assert.Equal(expected, adapter.Tensors.Select(t => t.Name).Order());
    }

    [Theory]
    [InlineData("adapter=esft", EsftAdapter.WeightsFile)]
    [InlineData("adapter=null", "model.safetensors")]
    public void ResumedRunKeepsItsSelectionAndEqualsAnUninterruptedOne(string adapter, string weights)
    {
        string baseModel = BaseModel(), straight = Path.Combine(_dir, "straight"), split = Path.Combine(_dir, "split");
        string config = ExpertConfigFile(), other = ExpertConfigFile("{\"experts\": {\"3\": [1]}}");
        TinyRun.Train(Esft(baseModel, straight, $"esft={config}", adapter, "max_steps=4", "save_steps=4"));
        TinyRun.Train(Esft(baseModel, split, $"esft={config}", adapter, "max_steps=4", "save_steps=4"), new TrainOptions(StopAtStep: 2));
        // The resumed run is handed another config: the checkpoint's recorded selection wins.
        TinyRun.Train(Esft(baseModel, split, $"esft={other}", adapter, "max_steps=4", "save_steps=4"), new TrainOptions(ResumeDir: split));
        foreach (var file in new[] { weights, CheckpointStore.OptimizerFile })
            Assert.Equal(File.ReadAllBytes(Path.Combine(straight, "checkpoint-4", file)), File.ReadAllBytes(Path.Combine(split, "checkpoint-4", file)));
        Assert.Equal(Selection, File.ReadAllText(Path.Combine(split, EsftTraining.SelectionFile)));
    }

    [Fact]
    public void MethodScoresTheTrainingDataAndSelects()
    {
        string baseModel = BaseModel(), output = Path.Combine(_dir, "method");
        string data = Path.Combine(_dir, "task.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 12).Select(i => $"{{\"text\": \"the king speaks of war {i} and peace to his court\"}}"));
        string yaml = Path.Combine(_dir, "config.yaml");
        File.WriteAllText(yaml, $"datasets:\n  - path: {data}\n    type: completion\n");
        var settings = Esft(baseModel, output, "esft_method=gate", "esft_p=0.3", "esft_samples=5", "sequence_len=64", "max_steps=1", "save_steps=1", "val_set_size=0")
            .Where(s => !s.StartsWith("datasets=", StringComparison.Ordinal)).ToArray();
        var logs = new List<string>();
        Trainer.Run(TrainConfig.Load(yaml, settings), new TrainOptions(), null, logs.Add, TestContext.Current.CancellationToken);
        Assert.Contains(logs, l => l == "esft: scoring the routed experts on 5 sequence(s) of the training data");
        var scores = ExpertScores.Read(Path.Combine(output, EsftTraining.ScoresFile));
        Assert.Equal([1, 2, 3], scores.Gate.Select(l => l.Layer));
        Assert.Equal(5, scores.Sequences);
        var selected = ExpertConfig.Read(Path.Combine(output, EsftTraining.SelectionFile));
        Assert.Equal(ExpertSelection.Select(scores.Gate, 0.3).ToJson(), selected.ToJson());
        Assert.All(selected.Experts, l => Assert.NotEmpty(l.Value));
    }

    [Theory]
    [InlineData("{\"experts\": {\"0\": [1]}}", "layer 0 is not an MoE layer of the model (MoE layers: 1-4)")]
    [InlineData("{\"experts\": {\"2\": [3, 16]}}", "layer 2: expert 16 is out of range (the model has 16 routed experts per layer, ids 0..15)")]
    [InlineData("{\"experts\": {\"1\": [\"a\"]}}", "layer 1: 'a' is not an expert id")]
    public void BadExpertConfigIsOneLineNamingTheFile(string json, string problem)
    {
        string baseModel = BaseModel(), config = ExpertConfigFile(json);
        var e = Assert.Throws<DeepSeekSharpException>(() => TinyRun.Train(Esft(baseModel, Path.Combine(_dir, "bad"), $"esft={config}")));
        Assert.Equal($"{config}: {problem}", e.Message);
    }
}
