using BenchmarkDotNet.Attributes;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Benchmarks;

/// <summary>The training shapes of bench-small (2048 tokens, hidden 256, MLP 768, vocab 8192), forward and backward forms.</summary>
[MemoryDiagnoser]
public class SgemmBenchmarks
{
    private WorkerPool _pool = null!;
    private float[] _a = [], _b = [], _c = [];

    [Params("2048x768x256", "2048x256x768", "768x256x2048/TN", "2048x8192x256")]
    public string Shape { get; set; } = "";

    [Params(1, 2)]
    public int Threads { get; set; }

    private (int M, int N, int K, bool TransA) Dims()
    {
        var parts = Shape.Split('/');
        var d = parts[0].Split('x').Select(int.Parse).ToArray();
        return (d[0], d[1], d[2], parts.Length > 1);
    }

    [GlobalSetup]
    public void Setup()
    {
        var (m, n, k, _) = Dims();
        _pool = new WorkerPool(Threads);
        var rng = new Random(1);
        _a = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble()).ToArray();
        _b = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextDouble()).ToArray();
        _c = new float[m * n];
    }

    [GlobalCleanup]
    public void Cleanup() => _pool.Dispose();

    [Benchmark]
    public void Multiply()
    {
        var (m, n, k, transA) = Dims();
        Sgemm.Multiply(_pool, transA, false, m, n, k, 1f, _a, transA ? m : k, _b, n, 0f, _c, n);
    }
}
