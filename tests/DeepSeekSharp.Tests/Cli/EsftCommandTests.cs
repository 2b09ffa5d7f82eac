using DeepSeekSharp.Data;
using DeepSeekSharp.FineTuning.Esft;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>
/// <c>dss esft score</c> / <c>select</c>, and ESFT adapters on <c>--adapter</c> and <c>dss merge</c>, through the real
/// entry point; bad score files are one line.
/// </summary>
[Collection(nameof(InProcessDss))]
public sealed class EsftCommandTests
{
    private readonly string _dir = TestPaths.TempDir();

    [Fact]
    public void SelectWritesTheReleasedConfigFromTheReleasedScores()
    {
        string esft = TestPaths.Fixture("esft"), output = Path.Combine(_dir, "law.json");
        var r = InProcessDss.Run(["esft", "select", "--scores", Path.Combine(esft, "expert_scores", "law", "summary.json"), "--method", "token", "--p", "0.2", "--out", output]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(esft, "expert_configs", "law.json")), File.ReadAllText(output));
        Assert.StartsWith($"wrote {output}: ", r.Stdout);
    }

    [Fact]
    public void ScoreOnATokenFileCountsWindowsOfL()
    {
        // v3-tiny reads ids < 128; 5 windows of 20 tokens, 3 scored.
        string bin = Path.Combine(_dir, "task.bin"), output = Path.Combine(_dir, "scores.json");
        var ids = Enumerable.Range(0, 100).Select(i => (i * 53 + 7) % 128).ToArray();
        TokenFile.Write(bin, [ids], 2);
        var r = InProcessDss.Run(["esft", "score", "--model", TestPaths.Fixture("v3-tiny"), "--data", bin, "--type", "bin16", "--samples", "3", "--seq", "20", "--out", output]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var scores = ExpertScores.Read(output);
        Assert.Equal((3, 60L), (scores.Sequences, scores.Tokens));
        Assert.Equal([1, 2], scores.Token.Select(l => l.Layer));
        var expected = ExpertScorer.Score(ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")),
            [.. Enumerable.Range(0, 3).Select(i => new ScoringSequence(ids[(i * 20)..((i + 1) * 20)]))]);
        Assert.Equal(expected.Gate[1].Scores, scores.Gate[1].Scores);
        Assert.Equal(1.0, scores.Token[0].Scores.Sum(), 12);
    }

    [Fact]
    public void ScoreFileWithTheWrongExpertCountIsOneLine()
    {
        // The release's scores are for V2-Lite's 64 experts; v3-tiny has 8.
        string scores = Path.Combine(TestPaths.Fixture("esft"), "expert_scores", "intent", "summary.json");
        var r = InProcessDss.Run(["esft", "select", "--scores", scores, "--method", "gate", "--p", "0.1", "--model", TestPaths.Fixture("v3-tiny"), "--out", Path.Combine(_dir, "x.json")]);
        InProcessDss.AssertOneLineError(r, scores, "token_scores.1 scores 64 experts; the model has 8 routed experts per layer");

        string uneven = Path.Combine(_dir, "uneven.json");
        File.WriteAllText(uneven, "{\"token_scores\": {\"1\": {\"0\": 0.5, \"1\": 0.5}, \"2\": {\"0\": 1.0}}, \"gate_scores\": {\"1\": {\"0\": 0.5, \"1\": 0.5}}}");
        r = InProcessDss.Run(["esft", "select", "--scores", uneven, "--method", "token", "--p", "0.2", "--out", Path.Combine(_dir, "y.json")]);
        InProcessDss.AssertOneLineError(r, uneven, "token_scores.2 has 1 experts, layer 1 has 2");

        string narrow = Path.Combine(_dir, "narrow.json");
        File.WriteAllText(narrow, "{\"token_scores\": {\"1\": {\"0\": 0.5, \"1\": 0.5}}, \"gate_scores\": {\"1\": {\"0\": 0.5, \"1\": 0.5}}}");
        r = InProcessDss.Run(["esft", "select", "--scores", narrow, "--method", "token", "--p", "0.2", "--model", TestPaths.Fixture("v3-tiny"), "--out", Path.Combine(_dir, "z.json")]);
        InProcessDss.AssertOneLineError(r, narrow, "token_scores.1 scores 2 experts; the model has 8 routed experts per layer");
    }

    [Fact]
    public void AdapterOnForwardEqualsTheMergedModel()
    {
        // An ESFT adapter for v3-tiny: experts 2 and 7 of layer 1 scaled by 1.5.
        string model = TestPaths.Fixture("v3-tiny"), adapter = Path.Combine(_dir, "adapter");
        Directory.CreateDirectory(adapter);
        File.WriteAllText(Path.Combine(adapter, EsftAdapter.ConfigFile), "{\"experts\": {\"1\": [2, 7]}, \"shared_experts\": false, \"non_expert_modules\": false}");
        using (var reader = SafeTensorsReader.Open(Path.Combine(model, "model.safetensors")))
        {
            var tensors = reader.Tensors.Where(t => t.Name.StartsWith("model.layers.1.mlp.experts.2.", StringComparison.Ordinal) || t.Name.StartsWith("model.layers.1.mlp.experts.7.", StringComparison.Ordinal))
                .Select(t => (t.Name, t.Shape, reader.ReadFloat32(t.Name).Select(v => v * 1.5f).ToArray())).ToList();
            Assert.Equal(6, tensors.Count);
            SafeTensorsWriter.WriteFloat32(Path.Combine(adapter, EsftAdapter.WeightsFile), tensors);
        }
        string merged = Path.Combine(_dir, "merged");
        var r = InProcessDss.Run(["merge", "--model", model, "--adapter", adapter, "--out", merged, "--probe-tokens", "0"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("0 Linear(s) merged, 6 tensor(s) replaced", r.Stdout);
        float[] baseLogits = Logits(model), adapterLogits = Logits(model, "--adapter", adapter), mergedLogits = Logits(merged);
        Assert.Equal(mergedLogits, adapterLogits);
        Assert.True(baseLogits.Zip(adapterLogits, (a, b) => Math.Abs(a - b)).Max() > 1e-3, "the adapter changed nothing");
    }

    [Fact]
    public void AdapterFolderThatTrainsATensorItLacksIsOneLine()
    {
        string adapter = Path.Combine(_dir, "partial");
        Directory.CreateDirectory(adapter);
        File.WriteAllText(Path.Combine(adapter, EsftAdapter.ConfigFile), "{\"experts\": {\"2\": [1]}}");
        SafeTensorsWriter.WriteFloat32(Path.Combine(adapter, EsftAdapter.WeightsFile), [("model.layers.2.mlp.experts.1.up_proj.weight", [16, 32], new float[16 * 32])]);
        var r = InProcessDss.Run(["forward", "--model", TestPaths.Fixture("v3-tiny"), "--tokens", "1,2,3", "--adapter", adapter, "--out", Path.Combine(_dir, "f.safetensors")]);
        InProcessDss.AssertOneLineError(r, adapter, "expert_cfg.json trains 'model.layers.2.mlp.experts.1.gate_proj.weight', which no *.safetensors of the folder holds");
    }

    private float[] Logits(string model, params string[] extra)
    {
        string output = Path.Combine(_dir, $"logits-{Guid.NewGuid():N}.safetensors");
        var r = InProcessDss.Run(["forward", "--model", model, "--tokens", "5,17,99,3,64,120,8,41,77,2", "--out", output, .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var reader = SafeTensorsReader.Open(output);
        return reader.ReadFloat32("logits");
    }
}
