using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>One unit of parallel work: <see cref="Execute"/> is called once for every task index.</summary>
public interface IWorkerTask
{
    /// <summary>Runs task <paramref name="taskIndex"/> (0 ≤ index &lt; the task count given to <see cref="WorkerPool.Run(int, IWorkerTask)"/>).</summary>
    void Execute(int taskIndex);
}

/// <summary>
/// A persistent pool of worker threads for fine-grained data parallelism (GEMM tiles, row blocks). The calling
/// thread takes part in every <see cref="Run(int, IWorkerTask)"/>, so a pool of <c>ThreadCount</c> threads owns
/// <c>ThreadCount - 1</c> background threads. Idle workers spin for <c>SpinMicroseconds</c> after each run (so
/// back-to-back calls cost a few microseconds) and then block.
/// </summary>
/// <remarks>
/// Calls from inside a task (re-entrant) and calls from a second thread while a run is in flight execute inline,
/// serially, on the calling thread; both are safe. Tasks are claimed dynamically, so uneven tasks balance out.
/// </remarks>
public sealed class WorkerPool : IDisposable
{
    // _state packs (generation: 24 bits | task count: 20 bits | next task index: 20 bits). Claiming a task is a CAS
    // that only succeeds for the current generation, so a worker that wakes late can never run a stale job.
    private const int IndexBits = 20;
    private const long IndexMask = (1L << IndexBits) - 1;
    private const int MaxTasksPerBatch = (1 << IndexBits) - 1;

    private static readonly Lazy<WorkerPool> s_default = new(CreateDefault, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly Thread[] _threads;
    private readonly object _sleepLock = new();
    private readonly long _spinTicks;
    private long _state;
    private int _completed;
    private int _sleepers;
    private int _busy;
    private volatile bool _disposed;
    private IWorkerTask? _task;
    private int _taskOffset;
    private ExceptionDispatchInfo? _error;

    /// <summary>Creates a pool in which <paramref name="threadCount"/> threads (the caller included) share each run.</summary>
    /// <param name="threadCount">Total degree of parallelism, ≥ 1; 1 means everything runs inline.</param>
    /// <param name="spinMicroseconds">How long an idle worker spins before blocking (default 200 µs).</param>
    public WorkerPool(int threadCount, int spinMicroseconds = 200)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threadCount, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(spinMicroseconds);
        ThreadCount = threadCount;
        _spinTicks = (long)(spinMicroseconds * (Stopwatch.Frequency / 1e6));
        _threads = new Thread[threadCount - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(WorkerLoop, 256 * 1024) { IsBackground = true, Name = $"dss-worker-{i + 1}" };
            _threads[i].Start();
        }
    }

    /// <summary>
    /// Threads a <see cref="Run(int, IWorkerTask)"/> started now would use: 1 while another run is in flight (a call from
    /// inside a task, such as a GEMM inside one expert of a concurrent MoE layer, executes inline), else
    /// <see cref="ThreadCount"/>. Kernels plan their split with it, so an inline call is not cut into pieces for
    /// workers it will not get. (The answer can go stale; a stale plan is only less parallel, never wrong.)
    /// </summary>
    public int AvailableThreads => Volatile.Read(ref _busy) != 0 ? 1 : ThreadCount;

    /// <summary>Total threads taking part in a run, the caller included.</summary>
    public int ThreadCount { get; }

    /// <summary>The most threads a configuration may ask for: far past any core count that helps, far below the tens of
    /// thousands of stacks that abort the runtime.</summary>
    public const int MaxThreads = 1024;

    /// <summary>A process-wide pool created on first use with <see cref="CreateDefault"/>; never disposed.</summary>
    public static WorkerPool Default => s_default.Value;

    /// <summary>Creates a pool sized by the <c>DSS_THREADS</c> environment variable, else <see cref="Environment.ProcessorCount"/>.</summary>
    public static WorkerPool CreateDefault()
    {
        string? env = Environment.GetEnvironmentVariable("DSS_THREADS");
        int threads = int.TryParse(env, out int t) && t > 0 ? t : Environment.ProcessorCount;
        return new WorkerPool(threads);
    }

    /// <summary>Runs <paramref name="task"/> for task indices 0..taskCount-1 and returns when all have finished.</summary>
    /// <remarks>The first exception thrown by a task is rethrown here after all tasks have finished.</remarks>
    public void Run(int taskCount, IWorkerTask task)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentOutOfRangeException.ThrowIfNegative(taskCount);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (taskCount == 0) return;
        if (taskCount == 1 || _threads.Length == 0 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            for (int i = 0; i < taskCount; i++) task.Execute(i);
            return;
        }
        ExceptionDispatchInfo? error;
        try
        {
            for (int offset = 0; offset < taskCount; offset += MaxTasksPerBatch)
                RunBatch(Math.Min(MaxTasksPerBatch, taskCount - offset), offset, task);
        }
        finally
        {
            _task = null;
            error = _error; // taken before releasing the pool, so a next run cannot see or lose it
            _error = null;
            Volatile.Write(ref _busy, 0);
        }
        error?.Throw();
    }

    /// <summary>Runs <paramref name="body"/> for indices 0..taskCount-1 (allocates a small wrapper per call).</summary>
    public void Run(int taskCount, Action<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        Run(taskCount, new DelegateTask(body));
    }

    private void RunBatch(int count, int offset, IWorkerTask task)
    {
        _task = task;
        _taskOffset = offset;
        _completed = 0;
        long generation = ((Volatile.Read(ref _state) >> (2 * IndexBits)) + 1) & 0xFFFFFF;
        long state = (generation << (2 * IndexBits)) | ((long)count << IndexBits);
        Interlocked.Exchange(ref _state, state); // publishes _task/_taskOffset/_completed (full fence)
        if (Volatile.Read(ref _sleepers) > 0)
            lock (_sleepLock) Monitor.PulseAll(_sleepLock);

        Drain(state);
        var spin = new SpinWait();
        while (Volatile.Read(ref _completed) < count) spin.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>Claims and runs tasks of the generation in <paramref name="seen"/> until none are left.</summary>
    private void Drain(long seen)
    {
        long generationAndCount = seen & ~IndexMask;
        int count = (int)((seen >> IndexBits) & IndexMask);
        while (true)
        {
            long s = Volatile.Read(ref _state);
            if ((s & ~IndexMask) != generationAndCount) return;
            int index = (int)(s & IndexMask);
            if (index >= count) return;
            if (Interlocked.CompareExchange(ref _state, s + 1, s) != s) continue;
            try
            {
                _task!.Execute(_taskOffset + index);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null);
            }
            Interlocked.Increment(ref _completed);
        }
    }

    private void WorkerLoop()
    {
        long lastGeneration = Volatile.Read(ref _state) & ~IndexMask;
        while (true)
        {
            long s = WaitForNewGeneration(lastGeneration);
            if (_disposed) return;
            lastGeneration = s & ~IndexMask;
            Drain(s);
        }
    }

    private long WaitForNewGeneration(long lastGeneration)
    {
        long start = Stopwatch.GetTimestamp();
        int spins = 0;
        while (true)
        {
            long s = Volatile.Read(ref _state);
            if ((s & ~IndexMask) != lastGeneration || _disposed) return s;
            if (++spins < 64 || Stopwatch.GetTimestamp() - start < _spinTicks)
            {
                Thread.SpinWait(8);
                continue;
            }
            lock (_sleepLock)
            {
                Interlocked.Increment(ref _sleepers);
                while (((s = Volatile.Read(ref _state)) & ~IndexMask) == lastGeneration && !_disposed)
                    Monitor.Wait(_sleepLock);
                Interlocked.Decrement(ref _sleepers);
            }
            return s;
        }
    }

    /// <summary>Stops and joins the worker threads. Runs already in flight complete first.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_sleepLock) Monitor.PulseAll(_sleepLock);
        foreach (Thread t in _threads) t.Join();
    }

    private sealed class DelegateTask(Action<int> body) : IWorkerTask
    {
        public void Execute(int taskIndex) => body(taskIndex);
    }
}
