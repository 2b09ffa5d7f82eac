using BenchmarkDotNet.Attributes;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Benchmarks;

/// <summary>
/// One MoE layer's routed experts at bench-small's shape (2,048 tokens, hidden 256, 16 SwiGLU experts of 128, top-4,
/// tokens spread unevenly over the experts as a router does), forward and forward + backward, on both paths: grouped
/// GEMMs (one call per projection for all experts) and one module call per expert run concurrently. Threads come from
/// DSS_THREADS, set before the backend starts (each BenchmarkDotNet case runs in its own process).
/// </summary>
[MemoryDiagnoser]
public class MoeExpertsBenchmarks
{
    private const int Tokens = 2048, TopK = 4;
    private int Hidden => Workload == "bench-medium" ? 512 : 256;
    private int Inter => Workload == "bench-medium" ? 256 : 128;
    private int Experts => Workload == "bench-medium" ? 32 : 16;
    private Tensor _x = null!;
    private Tensor[] _gate = [], _up = [], _down = [];
    private int[] _rows = [], _offsets = [];

    [Params(1, 2)]
    public int Threads { get; set; }

    [Params("bench-small", "bench-medium")]
    public string Workload { get; set; } = "bench-small";

    [Params("grouped", "modules")]
    public string Path { get; set; } = "grouped";

    [GlobalSetup]
    public void Setup()
    {
        Environment.SetEnvironmentVariable("DSS_THREADS", Threads.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var rng = new Random(1);
        Tensor Random(int rows, int cols, bool grad)
        {
            var data = new float[rows * cols];
            for (int i = 0; i < data.Length; i++) data[i] = (rng.NextSingle() * 2 - 1) * 0.05f;
            return new Tensor([rows, cols], data) { RequiresGrad = grad };
        }
        _x = Random(Tokens, Hidden, true);
        _gate = Enumerable.Range(0, Experts).Select(_ => Random(Inter, Hidden, true)).ToArray();
        _up = Enumerable.Range(0, Experts).Select(_ => Random(Inter, Hidden, true)).ToArray();
        _down = Enumerable.Range(0, Experts).Select(_ => Random(Hidden, Inter, true)).ToArray();
        // Skewed routing: expert e is picked with weight 1 + e/8 (a router's load is never flat); k distinct per token.
        var perExpert = new List<int>[Experts];
        for (int e = 0; e < Experts; e++) perExpert[e] = [];
        double[] weight = Enumerable.Range(0, Experts).Select(e => 1 + e / 8.0).ToArray();
        for (int t = 0; t < Tokens; t++)
        {
            var chosen = new HashSet<int>();
            while (chosen.Count < TopK)
            {
                double u = rng.NextDouble() * weight.Sum();
                int e = 0;
                while (u > weight[e]) u -= weight[e++];
                chosen.Add(e);
            }
            foreach (int e in chosen) perExpert[e].Add(t);
        }
        _rows = perExpert.SelectMany(r => r).ToArray();
        _offsets = new int[Experts + 1];
        for (int e = 0; e < Experts; e++) _offsets[e + 1] = _offsets[e] + perExpert[e].Count;
    }

    private Tensor Run() => Path == "grouped"
        ? Functional.GroupedSwiGluExperts(_x, _rows, _offsets, _gate, _up, _down)
        : Functional.RoutedExperts(_x, _rows, _offsets, (e, rows) =>
            Functional.Linear(Functional.SiluMul(Functional.Linear(rows, _gate[e]), Functional.Linear(rows, _up[e])), _down[e]));

    [Benchmark]
    public void Forward()
    {
        using var _ = GradMode.NoGrad();
        Run().DropStorage();
    }

    [Benchmark]
    public void ForwardBackward()
    {
        var y = Run();
        var seed = StoragePool.Rent((int)y.Length);
        Array.Fill(seed, 1e-3f, 0, (int)y.Length);
        Backprop.BackwardFrom(y, seed);
        y.DropStorage();
        foreach (var t in _gate.Concat(_up).Concat(_down).Append(_x))
        {
            if (t.Grad is { } g) StoragePool.Return(g);
            t.Grad = null;
        }
    }
}
