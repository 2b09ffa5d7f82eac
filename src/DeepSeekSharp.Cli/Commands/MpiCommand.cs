using System.CommandLine;
using DeepSeekSharp.Distributed;

namespace DeepSeekSharp.Cli.Commands;

/// <summary>
/// <c>dss mpi info|check</c>: which world this process is in, and a check of the MPI layer on the ranks a launcher
/// started (<c>mpirun -np 4 dss mpi check</c>): every collective against its definition, the deterministic gradient sum
/// and ZeRO-1 against one process's result.
/// </summary>
internal static class MpiCommand
{
    public static Command Create()
    {
        var group = new Command("mpi", "The MPI layer (run under mpirun or srun): the world this process is in, and a check of every collective and of the deterministic gradient reduction");
        group.Subcommands.Add(Info());
        group.Subcommands.Add(Check());
        return group;
    }

    private static Command Info()
    {
        var cmd = new Command("info", "Print this rank's place in the world (single process when no MPI launcher started it)");
        cmd.SetAction(r => CliCommon.RunDistributed(world =>
        {
            string launcher = Communicator.DetectLauncher(Environment.GetEnvironmentVariable) ?? "no MPI launcher";
            string library = world is MpiCommunicator mpi ? $", {mpi.LibraryPath}" : "";
            Console.WriteLine($"rank {world.Rank} of {world.Size}: {world.Description}{library} ({launcher}; pid {Environment.ProcessId} on {Environment.MachineName})");
            return 0;
        }));
        return cmd;
    }

    private static Command Check()
    {
        var microBatches = new Option<int>("--micro-batches") { Description = "micro-batches of the checked gradient sum (a multiple of the rank count)", DefaultValueFactory = _ => 12 };
        var seed = new Option<int>("--seed") { Description = "seed of the checked gradients", DefaultValueFactory = _ => 1 };
        // Fault injection for checking that a job whose rank dies ends instead of hanging (tests and cluster bring-up).
        var crashRank = new Option<int>("--crash-rank") { Description = "this rank exits with code 3 after the first collective, without finalising MPI", DefaultValueFactory = _ => -1, Hidden = true };
        var cmd = new Command("check", "Check every collective against its definition and the deterministic gradient sum and ZeRO-1 against one process's result; rank 0 prints the results and the digests (equal for every world size)")
        {
            microBatches, seed, crashRank,
        };
        cmd.SetAction(r => CliCommon.RunDistributed(world =>
        {
            int m = r.GetValue(microBatches);
            if (m < world.Size || m % world.Size != 0)
                throw new DeepSeekSharpException($"--micro-batches {m} is not a multiple of the {world.Size} ranks");
            bool root = world.Rank == 0;
            if (root) Console.WriteLine($"mpi check: {world.Description}");
            world.Barrier();
            if (world.Rank == r.GetValue(crashRank)) Environment.Exit(3);

            var results = MpiSelfCheck.Collectives(world);
            var (reduction, gradientDigest, parameterDigest) = MpiSelfCheck.Reduction(world, m, r.GetValue(seed));
            results.AddRange(reduction);
            int failed = 0;
            foreach (var result in results)
            {
                if (!result.Passed)
                {
                    failed++;
                    Console.Error.WriteLine($"rank {world.Rank}: FAIL {result.Name}: {result.Detail}");
                }
                else if (root) Console.WriteLine($"ok    {result.Name}");
            }
            var failures = new[] { failed };
            world.AllReduce<int>(failures, ReduceOp.Max);
            if (!root) return failures[0] == 0 ? 0 : 1;
            Console.WriteLine($"gradient digest {gradientDigest}");
            Console.WriteLine($"zero-1 digest   {parameterDigest}");
            if (failures[0] != 0)
            {
                Console.Error.WriteLine($"error: mpi check: a rank failed up to {failures[0]} of {results.Count} checks (lines above)");
                return 1;
            }
            Console.WriteLine($"mpi check: all {results.Count} checks passed on {world.Size} rank{(world.Size == 1 ? "" : "s")}");
            return 0;
        }));
        return cmd;
    }
}
