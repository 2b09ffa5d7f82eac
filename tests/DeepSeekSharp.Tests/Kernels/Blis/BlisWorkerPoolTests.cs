using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tests.Kernels.Blis;

public sealed class WorkerPoolTests
{
    private sealed class CountingTask(int count) : IWorkerTask
    {
        public readonly int[] Hits = new int[count];
        public void Execute(int taskIndex) => Interlocked.Increment(ref Hits[taskIndex]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void EveryTaskRunsExactlyOnce(int threads)
    {
        using var pool = new WorkerPool(threads);
        Assert.Equal(threads, pool.ThreadCount);
        for (int run = 0; run < 2000; run++)
        {
            int count = run % 37;
            var task = new CountingTask(count);
            pool.Run(count, task);
            Assert.All(task.Hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void WorkersThatFellAsleepWakeUp()
    {
        using var pool = new WorkerPool(3, spinMicroseconds: 0);
        for (int run = 0; run < 50; run++)
        {
            if (run % 10 == 0) Thread.Sleep(5);
            var task = new CountingTask(64);
            pool.Run(64, task);
            Assert.All(task.Hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void WorkersTakePartInRuns()
    {
        using var pool = new WorkerPool(2);
        // Other tests share the two cores, so a worker may be descheduled for one run; it must join within a few.
        bool both = false;
        for (int attempt = 0; attempt < 20 && !both; attempt++)
        {
            var threadIds = new int[8];
            pool.Run(8, i => { threadIds[i] = Environment.CurrentManagedThreadId; Thread.Sleep(20); });
            both = threadIds.Distinct().Count() == 2;
        }
        Assert.True(both, "both the caller and the worker should have run tasks");
    }

    [Fact]
    public void ExceptionsPropagateToTheCaller()
    {
        using var pool = new WorkerPool(2);
        var e = Assert.Throws<InvalidOperationException>(() => pool.Run(8, i => { if (i == 5) throw new InvalidOperationException("boom"); }));
        Assert.Equal("boom", e.Message);
        var task = new CountingTask(8);
        pool.Run(8, task); // still usable
        Assert.All(task.Hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public void NestedAndConcurrentRunsComplete()
    {
        using var pool = new WorkerPool(2);
        int total = 0;
        pool.Run(4, _ => pool.Run(5, _ => Interlocked.Increment(ref total)));
        Assert.Equal(20, total);
        total = 0;
        Parallel.For(0, 8, _ => { for (int r = 0; r < 100; r++) pool.Run(3, _ => Interlocked.Increment(ref total)); });
        Assert.Equal(8 * 100 * 3, total);
    }

    [Fact]
    public void DisposeIsIdempotentAndRunAfterDisposeThrows()
    {
        var pool = new WorkerPool(2);
        pool.Dispose();
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Run(2, _ => { }));
    }
}
