using System.Text.Json;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tests.Evaluation;
using DeepSeekSharp.Tests.FineTuning;
using DeepSeekSharp.Tests.Training;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>
/// <c>--adapter DIR</c> on forward/generate/eval and <c>dss merge</c> through the real entry point: the adapter changes
/// the output, and the merged folder gives the same output as the base with the adapter on; bad adapter folders are one line.
/// </summary>
[Collection(nameof(InProcessDss))]
public sealed class LoraCommandTests
{
    private readonly string _dir = TestPaths.TempDir();
    private readonly string _model;
    private readonly string _adapter;

    public LoraCommandTests()
    {
        _model = Path.Combine(_dir, "model");
        ModelCheckpoint.Save(Gsm8kEvaluatorTests.TinyModel(context: 128), _model);
        ByteTokenizer.SaveAsHfJson(Path.Combine(_model, "tokenizer.json"));
        _adapter = Path.Combine(_dir, "adapter");
        LoraMergeTests.WriteAdapter(_model, _adapter, bScale: 0.2f);
    }

    private string Merged(params string[] extra)
    {
        string output = Path.Combine(_dir, "merged" + string.Concat(extra));
        var r = InProcessDss.Run(["merge", "--model", _model, "--adapter", _adapter, "--out", output, .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return output;
    }

    private float[] ForwardLogits(string model, params string[] extra)
    {
        string output = Path.Combine(_dir, $"logits-{Guid.NewGuid():N}.safetensors");
        var r = InProcessDss.Run(["forward", "--model", model, "--tokens", "72,101,108,108,111,32,116,104,101,114,101", "--out", output, .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var reader = SafeTensorsReader.Open(output);
        return reader.ReadFloat32("logits");
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    [Fact]
    public void MergeHelpNamesItsOptions()
    {
        var r = InProcessDss.Run("merge", "--help");
        Assert.Equal(0, r.ExitCode);
        foreach (var option in new[] { "--model", "--adapter", "--out", "--dtype", "--overwrite", "--probe-tokens" }) Assert.Contains(option, r.Stdout);
    }

    [Fact]
    public void ForwardWithTheAdapterDiffersFromTheBaseAndEqualsTheMergedModel()
    {
        float[] plain = ForwardLogits(_model), adapted = ForwardLogits(_model, "--adapter", _adapter), merged = ForwardLogits(Merged());
        double scale = adapted.Max(v => Math.Abs((double)v));
        Assert.True(MaxDifference(adapted, merged) <= 1e-5 * scale, $"adapter vs merged: {MaxDifference(adapted, merged)} (scale {scale})");
        Assert.True(MaxDifference(adapted, plain) > 1e-2 * scale, $"the adapter hardly changes the logits: {MaxDifference(adapted, plain)}");
        // Over FP8-stored base weights the adapter still applies: close to fp32, far from the FP8 base without it.
        float[] fp8 = ForwardLogits(_model, "--adapter", _adapter, "--weights", "fp8"), fp8Plain = ForwardLogits(_model, "--weights", "fp8");
        Assert.True(MaxDifference(adapted, fp8) < MaxDifference(fp8Plain, fp8), $"fp8 + adapter: {MaxDifference(adapted, fp8)} from fp32 + adapter, {MaxDifference(fp8Plain, fp8)} from fp8 alone");
    }

    [Fact]
    public void GenerateWithTheAdapterGivesTheMergedModelsTokens()
    {
        int[] Generate(params string[] args)
        {
            var r = InProcessDss.Run(["generate", "--tokens", "72,101,108,108,111", "--max-new-tokens", "16", "--json", .. args]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            using var doc = JsonDocument.Parse(r.Stdout);
            return doc.RootElement.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        }
        int[] adapted = Generate("--model", _model, "--adapter", _adapter);
        Assert.Equal(Generate("--model", Merged()), adapted);
        Assert.NotEqual(Generate("--model", _model), adapted);
    }

    [Fact]
    public void EvalWithTheAdapterGivesTheMergedModelsLoss()
    {
        string data = Path.Combine(_dir, "gsm8k.jsonl");
        File.WriteAllLines(data, Gsm8kEvaluatorTests.Problems.Select(p => JsonSerializer.Serialize(new { question = p.Question, answer = p.Answer })));
        (double Loss, string? Adapter) Eval(params string[] args)
        {
            var r = InProcessDss.Run(["eval", "--data", data, "--type", "gsm8k", "--chat-template", "deepseek_v3", "--json", .. args]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            using var doc = JsonDocument.Parse(r.Stdout);
            return (doc.RootElement.GetProperty("loss").GetDouble(), doc.RootElement.GetProperty("adapter").GetString());
        }
        var adapted = Eval("--model", _model, "--adapter", _adapter);
        Assert.Equal(_adapter, adapted.Adapter);
        var merged = Eval("--model", Merged());
        Assert.Null(merged.Adapter);
        Assert.Equal(merged.Loss, adapted.Loss, 1e-4 * merged.Loss);
        Assert.True(Math.Abs(Eval("--model", _model).Loss - adapted.Loss) > 1e-3, "the adapter does not change the loss");
    }

    [Fact]
    public void ALoraRunsCheckpointIsAnAdapterForForwardAndMerge()
    {
        string corpus = TinyRun.Corpus(_dir), baseRun = Path.Combine(_dir, "base-run"), loraRun = Path.Combine(_dir, "lora-run");
        TinyRun.Train(TinyRun.Settings(corpus, baseRun, "max_steps=2", "save_steps=2"));
        string baseModel = Path.Combine(baseRun, "checkpoint-2");
        TinyRun.Train(TinyRun.Settings(corpus, loraRun, "model_preset=null", $"base_model={baseModel}", "adapter=lora", "lora_r=4", "lora_alpha=8",
            "lora_target_modules=[kv_b_proj, o_proj, shared_experts, mlp.experts.*.down_proj]", "learning_rate=5e-2", "max_steps=3", "save_steps=3"));
        string checkpoint = Path.Combine(loraRun, "checkpoint-3"), merged = Path.Combine(_dir, "lora-merged");
        var r = InProcessDss.Run("merge", "--model", baseModel, "--adapter", checkpoint, "--out", merged);
        Assert.True(r.ExitCode == 0, r.Stderr);

        float[] plain = ForwardLogits(baseModel), adapted = ForwardLogits(baseModel, "--adapter", checkpoint), fromMerged = ForwardLogits(merged);
        double scale = adapted.Max(v => Math.Abs((double)v));
        Assert.True(MaxDifference(adapted, fromMerged) <= 1e-5 * scale, $"adapter vs merged: {MaxDifference(adapted, fromMerged)} (scale {scale})");
        Assert.True(MaxDifference(adapted, plain) > 1e-4 * scale, $"the trained adapter does not change the logits: {MaxDifference(adapted, plain)}");
    }

    [Fact]
    public void MergeReportsItsErrorAndTheMergedFolderIsComplete()
    {
        string output = Path.Combine(_dir, "merged-bf16");
        var r = InProcessDss.Run("merge", "--model", _model, "--adapter", _adapter, "--out", output, "--dtype", "bf16", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal("bf16", root.GetProperty("dtype").GetString());
        Assert.True(root.GetProperty("merged_linears").GetInt32() > 10);
        Assert.Equal(1, root.GetProperty("replaced_tensors").GetInt32());
        Assert.InRange(root.GetProperty("max_stored_weight_error").GetDouble(), 1e-9, root.GetProperty("max_abs_weight").GetDouble() / 256);
        Assert.Equal(64, root.GetProperty("probe_tokens").GetInt32());
        Assert.InRange(root.GetProperty("max_logit_difference").GetDouble(), 1e-7, root.GetProperty("logit_scale").GetDouble());
        foreach (var file in new[] { "config.json", "model.safetensors", "tokenizer.json", "generation_config.json" }) Assert.True(File.Exists(Path.Combine(output, file)), file);

        var text = InProcessDss.Run("merge", "--model", _model, "--adapter", _adapter, "--out", Path.Combine(_dir, "merged-f32"));
        Assert.True(text.ExitCode == 0, text.Stderr);
        Assert.Contains("Linear(s) merged, 1 tensor(s) replaced", text.Stdout);
        Assert.Contains("max |stored W' - (W + scale·B·A)| = 0 ", text.Stdout);
        Assert.Contains("over 64 probe tokens", text.Stdout);
    }

    [Theory]
    [InlineData("forward")]
    [InlineData("generate")]
    [InlineData("eval")]
    [InlineData("merge")]
    public void AMissingAdapterFolderIsOneLine(string command)
    {
        string missing = Path.Combine(_dir, "no-such-adapter");
        InProcessDss.AssertOneLineError(InProcessDss.Run(Args(command, missing)), missing, "adapter folder not found");
    }

    [Fact]
    public void AFolderWithoutAdapterConfigIsOneLineNamingTheFile()
    {
        // A full model checkpoint passed as the adapter.
        InProcessDss.AssertOneLineError(InProcessDss.Run(Args("forward", _model)), Path.Combine(_model, LoraAdapters.ConfigFile), "not a PEFT adapter folder");
    }

    [Theory]
    [InlineData("forward")]
    [InlineData("merge")]
    public void AdapterTensorsForAModuleTheBaseLacksAreOneLine(string command)
    {
        string bad = Path.Combine(_dir, "bad-adapter");
        Directory.CreateDirectory(bad);
        File.WriteAllText(Path.Combine(bad, LoraAdapters.ConfigFile), """{"peft_type": "LORA", "r": 2, "lora_alpha": 4}""");
        SafeTensorsWriter.WriteFloat32(Path.Combine(bad, LoraAdapters.WeightsFile), [
            ("base_model.model.model.layers.99.self_attn.o_proj.lora_A.weight", [2, 4], new float[8]),
            ("base_model.model.model.layers.99.self_attn.o_proj.lora_B.weight", [4, 2], new float[8]),
        ]);
        InProcessDss.AssertOneLineError(InProcessDss.Run(Args(command, bad)), Path.Combine(bad, LoraAdapters.WeightsFile), "match no module of the model");
        Assert.False(Directory.Exists(Path.Combine(_dir, "out")));
    }

    private string[] Args(string command, string adapter) => command switch
    {
        "forward" => ["forward", "--model", _model, "--tokens", "1,2,3", "--adapter", adapter, "--out", Path.Combine(_dir, "out.safetensors")],
        "generate" => ["generate", "--model", _model, "--tokens", "1,2,3", "--adapter", adapter],
        "eval" => ["eval", "--model", _model, "--data", Path.Combine(_model, "tokenizer.json"), "--type", "gsm8k", "--adapter", adapter],
        _ => ["merge", "--model", _model, "--adapter", adapter, "--out", Path.Combine(_dir, "out")],
    };
}
