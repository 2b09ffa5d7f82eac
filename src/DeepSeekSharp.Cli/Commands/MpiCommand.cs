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
        // Fault injection, for checking that a broken job ends with a clear message instead of hanging (tests, cluster bring-up).
        var faultRank = new Option<int>("--fault-rank") { Description = "the rank that misbehaves after the first collective", DefaultValueFactory = _ => -1, Hidden = true };
        var fault = new Option<string>("--fault") { Description = "exit: exit with code 3 without finalising MPI; truncate: post receive buffers one element short in an all-to-all-v", DefaultValueFactory = _ => "exit", Hidden = true };
        fault.AcceptOnlyFromAmong("exit", "truncate");
        var cmd = new Command("check", "Check every collective against its definition and the deterministic gradient sum and ZeRO-1 against one process's result; rank 0 prints the results and the digests (equal for every world size)")
        {
            microBatches, seed, faultRank, fault,
        };
        cmd.SetAction(r => CliCommon.RunDistributed(world =>
        {
            int m = r.GetValue(microBatches);
            if (m < world.Size || m % world.Size != 0)
                throw new DeepSeekSharpException($"--micro-batches {m} is not a multiple of the {world.Size} ranks");
            bool root = world.Rank == 0;
            if (root) Console.WriteLine($"mpi check: {world.Description}");
            world.Barrier();
            if (r.GetValue(faultRank) is >= 0 and var misbehaving) InjectFault(world, misbehaving, r.GetValue(fault)!);

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

    /// <summary>
    /// Rank <paramref name="misbehaving"/> exits (the others then wait in the next collective) or receives four floats
    /// from every rank into room for three (MPI reports the truncation on that rank).
    /// </summary>
    private static void InjectFault(ICommunicator world, int misbehaving, string fault)
    {
        bool me = world.Rank == misbehaving;
        if (fault == "exit")
        {
            if (me) Environment.Exit(3);
            return;
        }
        int n = world.Size, room = me ? 3 : 4;
        var counts = new int[n];
        var offsets = new int[n];
        var roomCounts = new int[n];
        var roomOffsets = new int[n];
        for (int d = 0; d < n; d++) (counts[d], offsets[d], roomCounts[d], roomOffsets[d]) = (4, 4 * d, room, room * d);
        world.AllToAllV<float>(new float[4 * n], counts, offsets, new float[room * n], roomCounts, roomOffsets);
    }
}
