using BenchmarkDotNet.Attributes;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Benchmarks;

/// <summary>
/// The grouped SGEMM against one plain SGEMM call per group, on the products of one bench-small MoE layer: 16 experts
/// with uneven token counts (mean 512), hidden 256, intermediate 128. "Projection": C[n_e, 128] = X_e · W_eᵀ (gate/up
/// forward); "WeightGradient": dW_e[128, 256] += dZ_eᵀ · X_e (k = n_e, A transposed).
/// </summary>
public unsafe class GroupedSgemmBenchmarks
{
    private const int Hidden = 256, Inter = 128, Experts = 16;
    private WorkerPool _pool = null!;
    private int[] _counts = [];
    private float[] _x = [], _z = [], _w = [], _c = [], _dw = [];

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _pool = new WorkerPool(Threads);
        var rng = new Random(3);
        _counts = Enumerable.Range(0, Experts).Select(e => 380 + 18 * e).ToArray(); // 380..650 rows, like a router's load
        int s = _counts.Sum();
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => rng.NextSingle() - 0.5f).ToArray();
        _x = Random(s * Hidden);
        _z = Random(s * Inter);
        _w = Random(Experts * Inter * Hidden);
        _c = new float[s * Inter];
        _dw = new float[Experts * Inter * Hidden];
    }

    [GlobalCleanup]
    public void Cleanup() => _pool.Dispose();

    [Benchmark]
    public void ProjectionGrouped()
    {
        fixed (float* x = _x, w = _w, c = _c)
        {
            Span<SgemmGroup> groups = stackalloc SgemmGroup[Experts];
            int off = 0;
            for (int e = 0; e < Experts; e++)
            {
                groups[e] = new SgemmGroup(_counts[e], Inter, Hidden, x + off * Hidden, Hidden, w + e * Inter * Hidden, Hidden, c + off * Inter, Inter);
                off += _counts[e];
            }
            BlisSgemm.MultiplyGrouped(_pool, false, true, 1f, 0f, groups);
        }
    }

    [Benchmark]
    public void ProjectionPerGroup()
    {
        fixed (float* x = _x, w = _w, c = _c)
        {
            int off = 0;
            for (int e = 0; e < Experts; e++)
            {
                BlisSgemm.Multiply(_pool, false, true, _counts[e], Inter, Hidden, 1f, x + off * Hidden, Hidden, w + e * Inter * Hidden, Hidden, 0f,
                    c + off * Inter, Inter);
                off += _counts[e];
            }
        }
    }

    [Benchmark]
    public void WeightGradientGrouped()
    {
        fixed (float* x = _x, z = _z, dw = _dw)
        {
            Span<SgemmGroup> groups = stackalloc SgemmGroup[Experts];
            int off = 0;
            for (int e = 0; e < Experts; e++)
            {
                groups[e] = new SgemmGroup(Inter, Hidden, _counts[e], z + off * Inter, Inter, x + off * Hidden, Hidden, dw + e * Inter * Hidden, Hidden);
                off += _counts[e];
            }
            BlisSgemm.MultiplyGrouped(_pool, true, false, 1f, 1f, groups);
        }
    }

    [Benchmark]
    public void WeightGradientPerGroup()
    {
        fixed (float* x = _x, z = _z, dw = _dw)
        {
            int off = 0;
            for (int e = 0; e < Experts; e++)
            {
                BlisSgemm.Multiply(_pool, true, false, Inter, Hidden, _counts[e], 1f, z + off * Inter, Inter, x + off * Hidden, Hidden, 1f,
                    dw + e * Inter * Hidden, Hidden);
                off += _counts[e];
            }
        }
    }
}
