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
        string rest = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)));
        string err = await stderr;
        Assert.True(p.ExitCode == 130, $"exit {p.ExitCode}: {rest} {err}");
        string? latest = CheckpointStore.Latest(output);
        Assert.NotNull(latest);
        Assert.Contains("resume with --resume", rest);
        Directory.Delete(dir, true);
    }
}
