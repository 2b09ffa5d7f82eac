using DeepSeekSharp.IO.SafeTensors;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>The CLI's documented interfaces (inspect / forward / grad / init) and its bad-input behaviour.</summary>
public class CliCommandTests
{
    private static string V3Config => Path.Combine(TestPaths.RepoRoot, "configs", "models", "deepseek-v3");

    [Fact]
    public void InspectReportsDeepSeekV3Sizes()
    {
        var r = DssProcess.Run("inspect", "--model", V3Config, "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        double total = doc.RootElement.GetProperty("total_parameters").GetInt64() / 1e9;
        double active = doc.RootElement.GetProperty("activated_parameters").GetInt64() / 1e9;
        double mtp = (doc.RootElement.GetProperty("mtp_parameters").GetInt64() + doc.RootElement.GetProperty("mtp_stored_copies").GetInt64()) / 1e9;
        Assert.InRange(total, 668, 674);   // "671B"
        Assert.InRange(active, 36, 38.5);  // "37B"
        Assert.InRange(mtp, 12.5, 15);     // "about 14B"
    }

    [Fact]
    public void InspectReportsV2LiteSizes()
    {
        var r = DssProcess.Run("inspect", "--model", Path.Combine(TestPaths.RepoRoot, "configs", "models", "deepseek-v2-lite", "config.json"), "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        Assert.InRange(doc.RootElement.GetProperty("total_parameters").GetInt64() / 1e9, 15.2, 16.2); // "15.7B"
        Assert.InRange(doc.RootElement.GetProperty("activated_parameters").GetInt64() / 1e9, 2.2, 2.6); // "2.4B"
    }

    [Fact]
    public void ForwardAndGradWriteTheDocumentedTensors()
    {
        string dir = TestPaths.Fixture("v3-tiny");
        string tmp = TestPaths.TempDir();
        string fwd = Path.Combine(tmp, "fwd.safetensors"), grad = Path.Combine(tmp, "grad.safetensors");
        var r = DssProcess.Run("forward", "--model", dir, "--tokens", "5,9,3,7,1", "--mtp", "--out", fwd);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using (var f = SafeTensorsReader.Open(fwd))
        {
            Assert.True(f.TryGet("logits", out var logits));
            Assert.Equal([5L, 128L], logits.Shape.Select(d => (long)d));
            Assert.True(f.TryGet("mtp_logits", out var mtp));
            Assert.Equal([4L, 128L], mtp.Shape.Select(d => (long)d));
        }
        r = DssProcess.Run("grad", "--model", dir, "--tokens", "5,9,3,7,1", "--mtp-weight", "0.3", "--out", grad);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using (var g = SafeTensorsReader.Open(grad))
        {
            Assert.True(g.ReadFloat32("loss")[0] > 0);
            Assert.True(g.TryGet("grad.model.layers.1.mlp.gate.weight", out _));
            Assert.True(g.TryGet("grad.model.layers.3.eh_proj.weight", out _));
            Assert.False(g.TryGet("grad.model.layers.1.mlp.gate.e_score_correction_bias", out _));
        }
        Directory.Delete(tmp, true);
    }

    [Fact]
    public void InitThenForwardOnARandomModel()
    {
        string tmp = TestPaths.TempDir();
        string model = Path.Combine(tmp, "tiny");
        var r = DssProcess.Run("init", "--preset", "tiny-v3", "--out", model, "--seed", "3");
        Assert.True(r.ExitCode == 0, r.Stderr);
        r = DssProcess.Run("forward", "--model", model, "--tokens", "1,2,3", "--out", Path.Combine(tmp, "o.safetensors"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Directory.Delete(tmp, true);
    }

    [Fact]
    public void OutOfRangeTokenIsAOneLineError()
    {
        var r = DssProcess.Run("forward", "--model", TestPaths.Fixture("v3-tiny"), "--tokens", "1,2,999", "--out", Path.Combine(Path.GetTempPath(), "x.safetensors"));
        DssProcess.AssertCleanError(r, "999");
    }

    [Fact]
    public void MalformedTokensAreAOneLineError()
    {
        var r = DssProcess.Run("forward", "--model", TestPaths.Fixture("v3-tiny"), "--tokens", "1,x", "--out", Path.Combine(Path.GetTempPath(), "x.safetensors"));
        DssProcess.AssertCleanError(r, "'x'");
    }

    [Fact]
    public void MissingModelFolderIsAOneLineError()
    {
        var r = DssProcess.Run("forward", "--model", "/nonexistent/model", "--tokens", "1,2", "--out", "/tmp/x.safetensors");
        DssProcess.AssertCleanError(r, "/nonexistent/model");
    }

    [Fact]
    public void TruncatedWeightsAreAOneLineError()
    {
        string tmp = TestPaths.TempDir();
        File.Copy(Path.Combine(TestPaths.Fixture("v3-tiny"), "config.json"), Path.Combine(tmp, "config.json"));
        var bytes = File.ReadAllBytes(Path.Combine(TestPaths.Fixture("v3-tiny"), "model.safetensors"));
        File.WriteAllBytes(Path.Combine(tmp, "model.safetensors"), bytes[..(bytes.Length / 2)]);
        var r = DssProcess.Run("forward", "--model", tmp, "--tokens", "1,2", "--out", Path.Combine(tmp, "o.safetensors"));
        DssProcess.AssertCleanError(r, "model.safetensors");
        Directory.Delete(tmp, true);
    }

    [Fact]
    public void ShardPathEscapingTheFolderIsAOneLineError()
    {
        string tmp = TestPaths.TempDir();
        File.Copy(Path.Combine(TestPaths.Fixture("v3-tiny"), "config.json"), Path.Combine(tmp, "config.json"));
        File.WriteAllText(Path.Combine(tmp, "model.safetensors.index.json"),
            """{"metadata": {"total_size": 4}, "weight_map": {"model.embed_tokens.weight": "../../etc/passwd"}}""");
        var r = DssProcess.Run("forward", "--model", tmp, "--tokens", "1,2", "--out", Path.Combine(tmp, "o.safetensors"));
        DssProcess.AssertCleanError(r, "index.json");
        Directory.Delete(tmp, true);
    }

    [Fact]
    public void ShapeMismatchIsAOneLineError()
    {
        string tmp = TestPaths.TempDir();
        string cfg = File.ReadAllText(Path.Combine(TestPaths.Fixture("v3-tiny"), "config.json"));
        File.WriteAllText(Path.Combine(tmp, "config.json"), cfg.Replace("\"hidden_size\": 32", "\"hidden_size\": 48"));
        File.Copy(Path.Combine(TestPaths.Fixture("v3-tiny"), "model.safetensors"), Path.Combine(tmp, "model.safetensors"));
        var r = DssProcess.Run("grad", "--model", tmp, "--tokens", "1,2", "--out", Path.Combine(tmp, "o.safetensors"));
        DssProcess.AssertCleanError(r, "shape");
        Directory.Delete(tmp, true);
    }

    [Fact]
    public void UnknownModelTypeIsAOneLineError()
    {
        string tmp = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(tmp, "config.json"), """{"model_type": "llama"}""");
        var r = DssProcess.Run("inspect", "--model", tmp);
        DssProcess.AssertCleanError(r, "llama");
        Directory.Delete(tmp, true);
    }

    [Fact]
    public void BenchGemmTimesTheTransposedLayouts()
    {
        var r = DssProcess.Run("bench", "gemm", "--m", "70", "--n", "90", "--k", "50", "--trans-a", "--trans-b", "--threads", "1", "--iterations", "3", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout.Trim().Split('\n')[^1]);
        Assert.True(doc.RootElement.GetProperty("trans_a").GetBoolean());
        Assert.True(doc.RootElement.GetProperty("trans_b").GetBoolean());
        Assert.True(doc.RootElement.GetProperty("gflops").GetDouble() > 0);
        Assert.Equal(50, doc.RootElement.GetProperty("k").GetInt32());
    }

    [Fact]
    public void BenchTrainTimesALoraStepOverAStoredBase()
    {
        var args = new[] { "bench", "train", "--model", TestPaths.Fixture("v3-tiny"), "--batch", "1", "--seq", "16", "--steps", "1", "--warmup", "0", "--threads", "1", "--json" };
        var r = DssProcess.Run([.. args, "--lora-r", "4", "--base-precision", "fp8"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout.Trim().Split('\n')[^1]);
        Assert.True(doc.RootElement.GetProperty("tokens_per_s").GetDouble() > 0);
        DssProcess.AssertCleanError(DssProcess.Run([.. args, "--lora-r", "4", "--lora-targets", "nothing_like_this"]), "--lora-targets");
        DssProcess.AssertCleanError(DssProcess.Run([.. args, "--base-precision", "bf16"]), "--base-precision");
    }
}
