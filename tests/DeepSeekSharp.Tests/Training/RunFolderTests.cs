using System.Text;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>One run per output folder, and metrics that read as one run across resumes.</summary>
public class RunFolderTests
{
    [Fact]
    public async Task ASecondRunOnAFolderInUseIsRefused()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        string corpus = TinyRun.Corpus(dir);
        var settings = TinyRun.Settings(corpus, output, "max_steps=100000", "save_steps=1");
        using var stopFirst = new CancellationTokenSource();
        using var saved = new ManualResetEventSlim();
        var first = Task.Run(() => TinyRun.Train(settings,
            log: line => { if (line.StartsWith("saved ", StringComparison.Ordinal)) saved.Set(); }, ct: stopFirst.Token));
        Assert.True(saved.Wait(TimeSpan.FromMinutes(2), TestContext.Current.CancellationToken), "the first run did not save a step");

        var fresh = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(TinyRun.Settings(corpus, output)));
        Assert.Contains("in use by another run", fresh.Message);
        Assert.Contains($"PID {Environment.ProcessId}", fresh.Message);
        var resume = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(TinyRun.Settings(corpus, output), new TrainOptions(ResumeDir: output)));
        Assert.Contains("in use by another run", resume.Message);

        await stopFirst.CancelAsync();
        var result = await first;
        Assert.True(result.Interrupted);
        // Released when the run ended: the folder can be resumed now.
        Assert.Equal(result.FinalStep + 1, TinyRun.Train(settings, new TrainOptions(StopAtStep: (int)result.FinalStep + 1, ResumeDir: output)).FinalStep);
    }

    [Fact]
    public void AFreshRunIntoAUsedFolderIsRefusedUnlessOverwriteStartsItClean()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output, "max_steps=3");
        TinyRun.Train(settings);

        var refused = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(settings));
        Assert.Contains("--overwrite", refused.Message);
        Assert.Contains($"--resume {output}", refused.Message);
        Assert.Equal([1L, 2, 3], TinyRun.TrainRecords(output).Select(r => r.Step));

        var clean = DssProcess.Run(TinyRun.CliArgs(settings, "--overwrite"));
        Assert.True(clean.ExitCode == 0, clean.Stderr);
        Assert.Equal([1L, 2, 3], TinyRun.TrainRecords(output).Select(r => r.Step));
        Assert.Single(Directory.GetFiles(Path.Combine(output, "tensorboard")));
    }

    [Fact]
    public void MetricsReadAsOneRunAcrossAResume()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output);
        TinyRun.Train(settings);
        // As if the run died after writing step 6's records but before saving it: it resumes from checkpoint-3.
        Directory.Delete(Path.Combine(output, "checkpoint-6"), true);
        var before = TinyRun.TrainRecords(output);
        var resumed = TinyRun.Train(settings, new TrainOptions(ResumeDir: output));
        Assert.Equal(6, resumed.FinalStep);

        var records = TinyRun.TrainRecords(output);
        Assert.Equal([1L, 2, 3, 4, 5, 6], records.Select(r => r.Step));
        Assert.Equal(records.Select(r => r.Step * 2 * 32), records.Select(r => r.Tokens)); // micro_batch_size 2 × sequence_len 32
        Assert.Equal(before.Take(3), records.Take(3));
        for (int i = 1; i < records.Count; i++) Assert.True(records[i].Elapsed >= records[i - 1].Elapsed, $"elapsed_s went back at step {records[i].Step}");
        Assert.True(records[3].Elapsed >= before[2].Elapsed, "elapsed_s restarted after the resume");

        var events = Directory.GetFiles(Path.Combine(output, "tensorboard"));
        Assert.Single(events);
        var text = Encoding.Latin1.GetString(File.ReadAllBytes(events[0]));
        Assert.Equal(6, text.Split("train/loss").Length - 1);
    }
}
