using System.Diagnostics;

namespace DeepSeekSharp.Tests.Reporting;

/// <summary>Debian's <c>chromium</c>, headless, in a fresh profile: the page's DOM after its script ran, and the browser log.</summary>
internal static class HeadlessChromium
{
    public sealed record Page(string Dom, string Log);

    /// <summary>The browser on PATH; a test that needs it fails here, with how to install it, rather than skipping.</summary>
    public static string Executable => Find() ?? throw new InvalidOperationException(
        "chromium is not installed: the run report's browser test needs Debian's chromium (apt-get install -y chromium; .ci/run installs it)");

    public static Page DumpDom(string htmlPath)
    {
        string browser = Executable;
        string profile = TestPaths.TempDir();
        try
        {
            var psi = new ProcessStartInfo(browser) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string arg in new[]
            {
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                "--disable-component-update", "--disable-sync", "--disable-breakpad", "--disable-crash-reporter",
                $"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom", new Uri(Path.GetFullPath(htmlPath)).AbsoluteUri,
            }) psi.ArgumentList.Add(arg);
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(TimeSpan.FromMinutes(2)))
            {
                p.Kill(entireProcessTree: true);
                throw new TimeoutException($"chromium did not render {htmlPath} within 2 minutes");
            }
            Assert.True(p.ExitCode == 0, $"chromium exited with {p.ExitCode}: {stderr.Result}");
            return new Page(stdout.Result, stderr.Result);
        }
        finally
        {
            DeleteProfile(profile);
        }
    }

    private static string? Find()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            foreach (string name in new[] { "chromium", "chromium-browser" })
            {
                string candidate = Path.Combine(dir, name);
                if (File.Exists(candidate)) return candidate;
            }
        return null;
    }

    /// <summary>The browser's helper processes may still be closing files in the profile for a moment after it exits.</summary>
    private static void DeleteProfile(string profile)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                if (Directory.Exists(profile)) Directory.Delete(profile, true);
                return;
            }
            catch (IOException) when (attempt < 20)
            {
                Thread.Sleep(250);
            }
        }
    }
}
