using System.Diagnostics;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>Runs the real <c>dss</c> executable (built next to the tests) as a child process.</summary>
internal static class DssProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static Result Run(params string[] args) => Run(new Dictionary<string, string>(), args);

    public static Result Run(IReadOnlyDictionary<string, string> environment, params string[] args) => Run(environment, TimeSpan.FromMinutes(3), null, args);

    public static Result Run(IReadOnlyDictionary<string, string> environment, TimeSpan timeout, params string[] args) => Run(environment, timeout, null, args);

    /// <summary>Runs dss with <paramref name="stdin"/> as its standard input, closed after it (an interactive session).</summary>
    public static Result RunWithInput(string stdin, params string[] args) => Run(new Dictionary<string, string>(), TimeSpan.FromMinutes(3), stdin, args);

    private static Result Run(IReadOnlyDictionary<string, string> environment, TimeSpan timeout, string? stdin, string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = stdin is not null, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dss.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DSS_THREADS"] = "2";
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        if (stdin is not null)
        {
            p.StandardInput.Write(stdin);
            p.StandardInput.Close();
        }
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException("dss " + string.Join(' ', args) + " did not finish");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Asserts a clean failure: non-zero exit and exactly one line on stderr starting with "error:".</summary>
    public static void AssertCleanError(Result r, string mustContain)
    {
        Assert.NotEqual(0, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one error line, got: {r.Stderr}");
        Assert.StartsWith("error:", lines[0]);
        Assert.Contains(mustContain, lines[0]);
    }
}
