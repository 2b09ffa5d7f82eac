namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>Splits row ranges over the backend's workers.</summary>
internal static class CpuParallel
{
    /// <summary>Runs body(start, end) over [0, count) in chunks of at least <paramref name="minChunk"/>.</summary>
    public static void ForRanges(int count, int minChunk, WorkerPool? pool, Action<int, int> body)
    {
        if (count <= 0) return;
        int threads = pool?.AvailableThreads ?? 1;
        int chunks = Math.Min(threads * 4, Math.Max(1, count / Math.Max(1, minChunk)));
        if (chunks <= 1 || pool is null)
        {
            body(0, count);
            return;
        }
        pool.Run(chunks, c =>
        {
            int start = (int)((long)count * c / chunks), end = (int)((long)count * (c + 1) / chunks);
            if (end > start) body(start, end);
        });
    }
}
