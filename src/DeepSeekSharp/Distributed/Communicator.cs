using System.Globalization;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// Chooses this process's world: MPI's when an MPI launcher started it (<c>mpirun</c>, <c>mpiexec</c>, Slurm's
/// <c>srun</c>), otherwise a world of one that never loads an MPI library, so a plain run needs no MPI installed.
/// </summary>
public static class Communicator
{
    /// <summary>
    /// Environment variables that only a launcher sets, in the order they are looked at: Open MPI's mpirun, PMIx
    /// (Open MPI 4/5, <c>srun --mpi=pmix</c>), PMI-1/2 (MPICH's Hydra, <c>srun --mpi=pmi2</c>). Slurm's own variables are
    /// looked at last and only for steps of several tasks (<see cref="DetectLauncher"/>).
    /// </summary>
    public static readonly string[] LauncherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"];

    /// <summary>Overrides where libmpi is loaded from (a path or a file name); default libmpi.so.40, then libmpi.so.</summary>
    public const string LibraryVariable = "DSS_MPI_LIBRARY";

    /// <summary>The world of this process, from its real environment.</summary>
    public static ICommunicator CreateWorld() => CreateWorld(Environment.GetEnvironmentVariable);

    /// <param name="environment">reads an environment variable (tests pass a dictionary)</param>
    public static ICommunicator CreateWorld(Func<string, string?> environment)
    {
        string? launcher = DetectLauncher(environment);
        if (launcher is null) return new SingleProcessCommunicator();
        var world = MpiCommunicator.InitWorld(MpiLibrary.Load(environment(LibraryVariable)));
        int? expected = ExpectedSize(environment);
        if (expected is { } n && n != world.Size)
        {
            int size = world.Size;
            world.Dispose();
            throw new MpiException($"the launcher started {n} processes ({launcher}) but MPI sees a world of {size}: " +
                "each process initialised MPI on its own (under Slurm launch with srun --mpi=pmix or --mpi=pmi2)");
        }
        return world;
    }

    /// <summary>
    /// The variable (as NAME=value) that shows an MPI launcher started this process, or null for a plain process.
    /// Slurm sets SLURM_* in every job, a batch script included, so a Slurm step counts only with SLURM_STEP_NUM_TASKS ≥ 2.
    /// </summary>
    public static string? DetectLauncher(Func<string, string?> environment)
    {
        foreach (string name in LauncherVariables)
            if (environment(name) is { Length: > 0 } value) return $"{name}={value}";
        if (SlurmStepTasks(environment) is >= 2 and var tasks) return $"SLURM_STEP_NUM_TASKS={tasks}";
        return null;
    }

    /// <summary>The world size the launcher announced, when it says one (to catch ranks that each initialised alone).</summary>
    private static int? ExpectedSize(Func<string, string?> environment)
    {
        foreach (string name in (ReadOnlySpan<string>)["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
            if (int.TryParse(environment(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int n)) return n;
        return SlurmStepTasks(environment);
    }

    private static int? SlurmStepTasks(Func<string, string?> environment) =>
        int.TryParse(environment("SLURM_STEP_NUM_TASKS"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) ? n : null;
}
