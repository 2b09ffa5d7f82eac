using System.Diagnostics;
using DeepSeekSharp.Cli;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>
/// Tests that run <c>dss</c> in this process through its real entry point (<see cref="DssApp.Run"/>, what Program.cs
/// calls) with the console captured. They swap the process-wide console writers and measure process-wide allocation,
/// so they run alone, never beside other tests.
/// </summary>
[CollectionDefinition(nameof(InProcessDss), DisableParallelization = true)]
public sealed class InProcessDss
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed, long AllocatedBytes);

    private static readonly Lock Gate = new();

    public static Result Run(params string[] args)
    {
        lock (Gate)
        {
            var (oldOut, oldError) = (Console.Out, Console.Error);
            var (stdout, stderr) = (new StringWriter(), new StringWriter());
            Console.SetOut(stdout);
            Console.SetError(stderr);
            long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
            var clock = Stopwatch.StartNew();
            int exit;
            try { exit = DssApp.Run(args); }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldError);
            }
            return new Result(exit, stdout.ToString(), stderr.ToString(), clock.Elapsed, GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore);
        }
    }

    /// <summary>
    /// Asserts the bad-input contract: exit code 1, exactly one stderr line <c>error: &lt;file&gt;: ...</c> containing
    /// <paramref name="mustContain"/>, within <paramref name="maxSeconds"/> and <paramref name="maxAllocatedMb"/> of allocation.
    /// </summary>
    public static void AssertOneLineError(Result r, string file, string mustContain, double maxSeconds = 10, long maxAllocatedMb = 256)
    {
        string context = $"stderr: {r.Stderr}";
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}; {context}");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one error line; {context}");
        Assert.StartsWith($"error: {file}", lines[0]);
        Assert.Contains(mustContain, lines[0]);
        Assert.True(r.Elapsed.TotalSeconds < maxSeconds, $"took {r.Elapsed.TotalSeconds:F1} s; {context}");
        Assert.True(r.AllocatedBytes < maxAllocatedMb << 20, $"allocated {r.AllocatedBytes >> 20} MB; {context}");
    }
}
