using System.Diagnostics;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>
/// <c>mpirun -np N dss ARGS</c> as Open MPI launches it on a CI machine: as root, more ranks than cores, unbound, one
/// compute thread per rank. Without mpirun it fails saying what to install: a machine that cannot run the MPI tests
/// must not look green.
/// </summary>
internal static class MpiJob
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static string Mpirun()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, "mpirun"))) return Path.Combine(dir, "mpirun");
        Assert.Fail("mpirun not found on PATH: the MPI tests launch real ranks; install Open MPI (apt-get install -y openmpi-bin), as .ci/run does");
        return "";
    }

    /// <summary>Runs the job, killed (and failed) if it has not ended after 3 minutes.</summary>
    public static Result Launch(int ranks, params string[] args)
    {
        var psi = new ProcessStartInfo(Mpirun()) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (string a in (string[])["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "dotnet", Path.Combine(AppContext.BaseDirectory, "dss.dll"), .. args])
            psi.ArgumentList.Add(a);
        psi.Environment["DSS_THREADS"] = "1";
        // Containers often forbid the cross-memory attach Open MPI uses for large shared-memory messages.
        psi.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"mpirun -np {ranks} dss {string.Join(' ', args)} hung for 3 minutes; output so far: {(stdout.IsCompleted ? stdout.Result : "")}");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
