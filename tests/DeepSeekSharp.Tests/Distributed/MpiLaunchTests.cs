using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>
/// Real MPI jobs: <c>mpirun</c> starts N <c>dss</c> processes (Open MPI, as `.ci/run` installs it). Without mpirun these
/// tests fail, saying what to install: a machine that cannot run them must not look green.
/// </summary>
public class MpiLaunchTests
{
    private static MpiJob.Result Launch(int ranks, params string[] args) => MpiJob.Launch(ranks, args);

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void EveryCollectiveAndTheDeterministicReductionPassOnRealRanks(int ranks)
    {
        var job = Launch(ranks, "mpi", "check", "--micro-batches", "12", "--seed", "1");
        Assert.True(job.ExitCode == 0, $"exit {job.ExitCode}\n{job.Stdout}\n{job.Stderr}");
        Assert.Contains($"Open MPI v4.1", job.Stdout);
        Assert.Contains($"mpi check: all 16 checks passed on {ranks} ranks", job.Stdout);
        Assert.DoesNotContain("FAIL", job.Stderr);

        // Bitwise equal across world sizes: every launch prints the digests of the one-process tree, computed here.
        var expected = SelfCheckDefinition.Digests(12, seed: 1);
        Assert.Contains($"gradient digest {expected.Gradient}", job.Stdout);
        Assert.Contains($"zero-1 digest   {expected.Parameters}", job.Stdout);
    }

    [Fact]
    public void OneProcessWithoutALauncherPrintsTheSameDigests()
    {
        var r = DssProcess.Run("mpi", "check", "--micro-batches", "12", "--seed", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var expected = SelfCheckDefinition.Digests(12, seed: 1);
        Assert.Contains("mpi check: single process", r.Stdout);
        Assert.Contains($"gradient digest {expected.Gradient}", r.Stdout);
        Assert.Contains($"zero-1 digest   {expected.Parameters}", r.Stdout);
    }

    [Fact]
    public void ARankThatDiesMidJobEndsTheJobWithAMessageNamingIt()
    {
        // Rank 1 exits while rank 0 waits for it in the next collective: the job must end, not hang.
        var job = Launch(2, "mpi", "check", "--fault-rank", "1", "--fault", "exit");
        Assert.NotEqual(0, job.ExitCode);
        string all = job.Stdout + job.Stderr;
        Assert.Contains("exited with non-zero status", all);
        Assert.Matches(@"Process name: \[\[\d+,1\],1\]", all);
        Assert.Matches(@"Exit code:\s+3", all);
    }

    [Fact]
    public void AFailingMpiCallIsOneLineNamingTheCallTheRankAndMpisReason()
    {
        // Rank 1 posts receive buffers one element short: MPI reports the truncation there, the rank aborts the job.
        var job = Launch(2, "mpi", "check", "--fault-rank", "1", "--fault", "truncate");
        Assert.NotEqual(0, job.ExitCode);
        var errors = job.Stderr.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList();
        Assert.True(errors.Count == 1, job.Stderr);
        Assert.Matches(@"^error: rank 1 of 2: MPI_Alltoallv failed on rank 1: MPI_ERR_TRUNCATE: message truncated \(MPI error 15\)$", errors[0]);
    }

    [Fact]
    public void ABadArgumentOnEveryRankIsOneErrorLinePerRankAndTheJobEnds()
    {
        var job = Launch(2, "mpi", "check", "--micro-batches", "5");
        Assert.NotEqual(0, job.ExitCode);
        var errors = job.Stderr.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(errors);
        Assert.All(errors, line => Assert.Matches(@"^error: rank [01] of 2: --micro-batches 5 is not a multiple of the 2 ranks$", line));
    }
}
