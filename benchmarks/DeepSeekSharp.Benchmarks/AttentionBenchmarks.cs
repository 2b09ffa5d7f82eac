using BenchmarkDotNet.Attributes;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Benchmarks;

/// <summary>
/// One layer's MLA attention core at bench-small's shape (8 sequences × 256 tokens, 8 heads, dn 32, dr 16, dv 32) and
/// bench-medium's (4 × 512 tokens, 8 heads, dn 64, dr 32, dv 64), forward and backward, as the training step calls it. Useful FLOPs (causal half): forward 4·B·H·T²/2·(dq+dv)/2.
/// </summary>
[MemoryDiagnoser]
public class AttentionBenchmarks
{
    private WorkerPool _pool = null!;
    private MlaAttentionShape _s;
    private float[] _q = [], _kvb = [], _kpe = [], _o = [], _lse = [], _do = [], _dq = [], _dkvb = [], _dkpe = [];

    [Params(1, 2)]
    public int Threads { get; set; }

    [Params("bench-small", "bench-medium")]
    public string Workload { get; set; } = "bench-small";

    [GlobalSetup]
    public void Setup()
    {
        _pool = new WorkerPool(Threads);
        _s = Workload == "bench-medium" ? new MlaAttentionShape(4, 512, 8, 64, 32, 64, 1f / MathF.Sqrt(96))
            : new MlaAttentionShape(8, 256, 8, 32, 16, 32, 1f / MathF.Sqrt(48));
        int rows = _s.Batch * _s.SeqLen;
        var rng = new Random(1);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        _q = Random(rows * _s.Heads * _s.QDim);
        _kvb = Random(rows * _s.Heads * _s.KvbDim);
        _kpe = Random(rows * _s.RopeDim);
        _do = Random(rows * _s.Heads * _s.VDim);
        _o = new float[rows * _s.Heads * _s.VDim];
        _lse = new float[_s.Batch * _s.Heads * _s.SeqLen];
        _dq = new float[_q.Length];
        _dkvb = new float[_kvb.Length];
        _dkpe = new float[_kpe.Length];
        MlaAttentionKernels.Forward(_s, _q, _kvb, _kpe, _o, _lse, _pool);
    }

    [GlobalCleanup]
    public void Cleanup() => _pool.Dispose();

    [Benchmark]
    public void Forward() => MlaAttentionKernels.Forward(_s, _q, _kvb, _kpe, _o, _lse, _pool);

    [Benchmark]
    public void Backward() => MlaAttentionKernels.Backward(_s, _q, _kvb, _kpe, _lse, _do, _dq, _dkvb, _dkpe, _pool);
}
