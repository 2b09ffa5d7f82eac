namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Persistent worker threads for kernels that are called thousands of times per step: creating tasks per call
/// halves GEMM throughput on mid-sized shapes here (performance.md). <see cref="Run"/> hands out task indices
/// through one counter; the calling thread works too. Re-entrant calls (a task that itself calls Run) and
/// concurrent callers run inline instead of waiting.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim _start;
    private readonly object _gate = new();
    private Action<int>? _body;
    private int _taskCount;
    private int _next;
    private int _pending;
    private volatile bool _disposed;
    private readonly ManualResetEventSlim _done = new(false);
    [ThreadStatic] private static bool _insideTask;

    public WorkerPool(int threads)
    {
        Threads = Math.Max(1, threads);
        _start = new SemaphoreSlim(0);
        _threads = new Thread[Threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"dss-worker-{i + 1}" };
            _threads[i].Start();
        }
    }

    public int Threads { get; }

    /// <summary>Runs body(0..taskCount-1) across the pool and returns when all are done.</summary>
    public void Run(int taskCount, Action<int> body)
    {
        if (taskCount <= 0) return;
        if (taskCount == 1 || Threads == 1 || _insideTask || !Monitor.TryEnter(_gate))
        {
            for (int i = 0; i < taskCount; i++) body(i);
            return;
        }
        try
        {
            _body = body;
            _taskCount = taskCount;
            _next = 0;
            int helpers = Math.Min(_threads.Length, taskCount - 1);
            _pending = helpers + 1;
            _done.Reset();
            _start.Release(helpers);
            Work();
            if (Interlocked.Decrement(ref _pending) != 0) _done.Wait();
            _body = null;
        }
        finally
        {
            Monitor.Exit(_gate);
        }
    }

    private void Work()
    {
        _insideTask = true;
        try
        {
            var body = _body!;
            int i;
            while ((i = Interlocked.Increment(ref _next) - 1) < _taskCount) body(i);
        }
        finally { _insideTask = false; }
    }

    private void WorkerLoop()
    {
        while (true)
        {
            _start.Wait();
            if (_disposed) return;
            Work();
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
        }
    }

    public void Dispose()
    {
        _disposed = true;
        _start.Release(_threads.Length);
    }
}
