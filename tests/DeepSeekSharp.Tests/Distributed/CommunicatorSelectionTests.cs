using DeepSeekSharp.Distributed;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>Which world a process gets: MPI only under a launcher, a world of one otherwise.</summary>
public class CommunicatorSelectionTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    private static bool LibmpiIsLoaded() => File.ReadAllText("/proc/self/maps").Contains("libmpi", StringComparison.Ordinal);

    [Fact]
    public void WithoutALauncherTheWorldIsOneProcessAndLibmpiIsNeverLoaded()
    {
        // No test loads libmpi into the test process (MPI runs in child processes), so the maps show what this did.
        Assert.False(LibmpiIsLoaded());
        using (var world = Communicator.CreateWorld(Env()))
        {
            Assert.IsType<SingleProcessCommunicator>(world);
            Assert.Equal((0, 1), (world.Rank, world.Size));
        }
        // Slurm sets SLURM_* in every job, a batch script's single process included.
        using (var world = Communicator.CreateWorld(Env(("SLURM_JOB_ID", "42"), ("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1"))))
            Assert.IsType<SingleProcessCommunicator>(world);
        Assert.False(LibmpiIsLoaded());

        var r = DssProcess.Run("mpi", "info");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.StartsWith("rank 0 of 1: single process", r.Stdout);
    }

    [Theory]
    [InlineData("OMPI_COMM_WORLD_SIZE", "4")]
    [InlineData("PMIX_RANK", "0")]
    [InlineData("PMI_SIZE", "2")]
    [InlineData("PMI_RANK", "1")]
    [InlineData("SLURM_STEP_NUM_TASKS", "8")]
    public void EachLauncherIsRecognised(string variable, string value)
    {
        Assert.Equal($"{variable}={value}", Communicator.DetectLauncher(Env((variable, value))));
        Assert.Null(Communicator.DetectLauncher(Env((variable, ""))));
    }

    [Fact]
    public void UnderALauncherWithoutOpenMpiTheRunStopsWithOneClearLine()
    {
        var env = new Dictionary<string, string> { ["OMPI_COMM_WORLD_SIZE"] = "2", [Communicator.LibraryVariable] = "/nonexistent/libmpi.so.40" };
        var r = DssProcess.Run(env, "mpi", "info");
        DssProcess.AssertCleanError(r, "Open MPI's library could not be loaded");
        Assert.Contains("openmpi-bin", r.Stderr);
    }
}
