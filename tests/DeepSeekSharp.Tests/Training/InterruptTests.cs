using System.Diagnostics;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

public partial class InterruptTests
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int SendSignal(int pid, int signal);

    [Fact]
    public async Task CtrlCSavesACheckpointAndExitsWith130()
    {
        string dir = TestPaths.TempDir();
        string corpus = Path.Combine(dir, "c.txt");
        File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("to be or not to be, that is the question. ", 400)));
        string output = Path.Combine(dir, "run");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dss.dll"));
        foreach (var a in new[] { "train", "--set", $"datasets={corpus}", "--set", $"output_dir={output}", "--set", "sequence_len=32",
                     "--set", "micro_batch_size=2", "--set", "max_steps=100000", "--set", "logging_steps=1", "--set", "eval_steps=100000",
                     "--set", "save_steps=100000" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        string? line;
        int steps = 0;
        while ((line = p.StandardOutput.ReadLine()) is not null)
            if (line.Contains("step ", StringComparison.Ordinal) && line.Contains("loss", StringComparison.Ordinal) && ++steps == 3) break;
        Assert.Equal(3, steps);
        Assert.Equal(0, SendSignal(p.Id, 2)); // SIGINT, as Ctrl+C in a terminal
        var restTask = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        AssertExitsWithin(p, TimeSpan.FromMinutes(2), "SIGINT");
        string rest = await restTask;
        string err = await stderr;
        Assert.True(p.ExitCode == 130, $"exit {p.ExitCode}: {rest} {err}");
        string? latest = CheckpointStore.Latest(output);
        Assert.NotNull(latest);
        Assert.Contains("resume with --resume", rest);
        Directory.Delete(dir, true);
    }

    /// <summary>
    /// Fails (and kills the run) instead of hanging when the process outlives the signal. A shell starts background jobs
    /// with SIGINT ignored and children inherit that, so a suite launched with <c>&amp;</c> cannot test Ctrl+C: say so.
    /// </summary>
    private static void AssertExitsWithin(Process p, TimeSpan limit, string signal)
    {
        if (p.WaitForExit(limit)) return;
        p.Kill(entireProcessTree: true);
        string ignored = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal)) ?? "";
        Assert.Fail($"dss kept running {limit.TotalMinutes} minutes after {signal} (this test process: {ignored}; bit 1 set means SIGINT is ignored, inherited from a background shell job)");
    }

    private static Process StartTrain(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dss.dll"));
        foreach (var a in TinyRun.CliArgs(args)) psi.ArgumentList.Add(a);
        psi.Environment["DSS_THREADS"] = "2";
        return Process.Start(psi)!;
    }

    [Fact]
    public async Task SigtermWhileTokenisingStopsAtOnceWith143AndLeavesNoCache()
    {
        string dir = TestPaths.TempDir();
        string corpus = Path.Combine(dir, "c.jsonl");
        // ~4 MB of JSON lines through the DeepSeek-V3 tokenizer: several seconds of tokenising.
        var rng = new Random(5);
        var words = new[] { "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta" };
        File.WriteAllLines(corpus, Enumerable.Range(0, 8000).Select(_ =>
            System.Text.Json.JsonSerializer.Serialize(new { text = string.Join(' ', Enumerable.Range(0, 80).Select(_ => words[rng.Next(words.Length)])) })));
        string output = Path.Combine(dir, "run");
        using var p = StartTrain($"datasets={corpus}", $"output_dir={output}", $"tokenizer={Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer")}",
            "sequence_len=32", "micro_batch_size=2", "max_steps=5");
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        string? line;
        while ((line = p.StandardOutput.ReadLine()) is not null && !line.Contains("tokenizing", StringComparison.Ordinal)) { }
        Assert.NotNull(line);
        var clock = Stopwatch.StartNew();
        Assert.Equal(0, SendSignal(p.Id, 15));
        string rest = await p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(3)));
        string err = await stderr;
        Assert.True(p.ExitCode == 143, $"exit {p.ExitCode}: {rest} {err}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed} to stop");
        Assert.Equal("", err);
        Assert.Contains("nothing to save", rest);
        Assert.Null(DeepSeekSharp.Training.CheckpointStore.Latest(output));
        Assert.False(File.Exists(Path.Combine(output, "data", "tokens.json")), "a cache stopped half-way must not be taken as valid");
        Assert.Empty(Directory.GetFiles(Path.Combine(output, "data"), ".*"));
    }

    [Fact]
    public async Task TwoSigtermsDuringTrainingSaveOnceAndExitWith143()
    {
        string dir = TestPaths.TempDir();
        string corpus = Path.Combine(dir, "c.txt");
        File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("to be or not to be, that is the question. ", 400)));
        string output = Path.Combine(dir, "run");
        using var p = StartTrain($"datasets={corpus}", $"output_dir={output}", "sequence_len=32", "micro_batch_size=2", "max_steps=100000",
            "logging_steps=1", "eval_steps=100000", "save_steps=100000");
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        string? line;
        int steps = 0;
        while ((line = p.StandardOutput.ReadLine()) is not null)
            if (line.Contains("step ", StringComparison.Ordinal) && line.Contains("loss", StringComparison.Ordinal) && ++steps == 2) break;
        Assert.Equal(2, steps);
        Assert.Equal(0, SendSignal(p.Id, 15));
        Assert.Equal(0, SendSignal(p.Id, 15));
        var restTask = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        AssertExitsWithin(p, TimeSpan.FromMinutes(2), "two SIGTERMs");
        string rest = await restTask;
        string err = await stderr;
        Assert.True(p.ExitCode == 143, $"exit {p.ExitCode}: {rest} {err}");
        Assert.DoesNotContain("Unhandled", err);
        Assert.Single(rest.Split('\n'), l => l.Contains("saved ", StringComparison.Ordinal));
        Assert.NotNull(DeepSeekSharp.Training.CheckpointStore.Latest(output));
    }

    [Fact]
    public void AStopDuringEvaluationSkipsItAndSavesTheStep()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        using var stop = new CancellationTokenSource();
        var cfg = TrainConfig.Load(null, TinyRun.Settings(TinyRun.Corpus(dir), output, "eval_steps=2", "eval_batches=1000", "sample_tokens=50"));
        // Reported after step 2's update, just before its evaluation.
        var progress = new StopAt(2, stop);
        var result = Trainer.Run(cfg, new TrainOptions(), progress, _ => { }, stop.Token);
        Assert.True(result.Interrupted);
        Assert.Equal(2, result.FinalStep);
        Assert.Equal(Path.Combine(output, "checkpoint-2"), result.LastCheckpoint);
        Assert.DoesNotContain(File.ReadLines(Path.Combine(output, "metrics.jsonl")), l => l.Contains("\"eval\"", StringComparison.Ordinal));
    }

    [Fact]
    public void AStopBeforeTheFirstStepEndsWithoutTokenisingOrSaving()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        using var stop = new CancellationTokenSource();
        stop.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => TinyRun.Train(TinyRun.Settings(TinyRun.Corpus(dir), output), ct: stop.Token));
        Assert.False(File.Exists(Path.Combine(output, "data", "tokens.bin")));
        Assert.Null(CheckpointStore.Latest(output));
    }

    private sealed class StopAt(long step, CancellationTokenSource stop) : IProgress<TrainProgress>
    {
        public void Report(TrainProgress value)
        {
            if (value.Step == step) stop.Cancel();
        }
    }
}
