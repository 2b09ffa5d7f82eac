using System.Runtime.Intrinsics;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Optim;

/// <summary>How AdamW stores its two moments.</summary>
public enum MomentPrecision
{
    /// <summary>fp32 (8 bytes per parameter).</summary>
    Fp32,
    /// <summary>BF16, as in DeepSeek-V3's FP8 recipe (4 bytes per parameter): each step widens a chunk of the moments to
    /// fp32, updates it and rounds it back to nearest even.</summary>
    Bf16,
}

/// <summary>
/// AdamW with decoupled weight decay (training.md defaults: β1 0.9, β2 0.95, ε 1e-8, decay 0.1 on parameters
/// whose <see cref="Parameter.WeightDecay"/> is set; norms and embeddings are not decayed). Frozen parameters
/// (RequiresGrad false) are skipped; a parameter without a gradient this step is updated with zeros. The master
/// weights are always fp32; the moments fp32 or BF16 (<see cref="Moments"/>).
/// </summary>
public sealed class AdamW : IOptimizer
{
    private const int Chunk = 4096;

    private readonly List<(string Name, Parameter P)> _params;
    private readonly Dictionary<Parameter, MomentState> _state = new(ReferenceEqualityComparer.Instance);

    public AdamW(IEnumerable<(string Name, Parameter P)> parameters) { _params = parameters.ToList(); }

    public float Beta1 { get; init; } = 0.9f;
    public float Beta2 { get; init; } = 0.95f;
    public float Eps { get; init; } = 1e-8f;
    public float WeightDecay { get; init; } = 0.1f;
    public MomentPrecision Moments { get; init; } = MomentPrecision.Fp32;

    /// <summary>Number of steps taken (bias correction uses it).</summary>
    public long Step { get; private set; }

    /// <summary>Bytes held by the moments.</summary>
    public long StateBytes => _state.Values.Sum(s => s.Bytes);

    /// <summary>Workers the update is split over (chunks of parameters are independent); null runs it inline.</summary>
    public DeepSeekSharp.Kernels.Cpu.WorkerPool? Pool { get; init; } = DeepSeekSharp.Kernels.Cpu.CpuBackend.Default.Pool;

    public void Update(float learningRate)
    {
        Step++;
        float bc1 = 1f - MathF.Pow(Beta1, Step), bc2 = 1f - MathF.Pow(Beta2, Step);
        float decay = 1f - learningRate * WeightDecay;
        _work.Clear();
        foreach (var (_, p) in _params)
        {
            if (!p.RequiresGrad) continue;
            int n = (int)p.Length;
            // A parameter no token reached this step (an idle expert) is updated with a zero gradient, as with
            // zero_grad(set_to_none=False): moments decay and decoupled decay applies, the same in a resumed run.
            p.Grad ??= new float[n];
            if (!_state.TryGetValue(p, out var st)) _state[p] = st = new MomentState(n, Moments);
            for (int c0 = 0; c0 < n; c0 += Chunk) _work.Add((p, st, c0, Math.Min(Chunk, n - c0)));
        }
        // Every element's update is independent, so the chunks run in any order on any worker (same result).
        var step = new ChunkStep(this, learningRate, bc1, bc2, decay);
        if (Pool is null || _work.Count < 8) { for (int i = 0; i < _work.Count; i++) step.Execute(i); }
        else Pool.Run(_work.Count, step);
    }

    private readonly List<(Parameter P, MomentState St, int C0, int Len)> _work = [];

    private sealed class ChunkStep(AdamW opt, float lr, float bc1, float bc2, float decay) : DeepSeekSharp.Kernels.Cpu.IWorkerTask
    {
        [ThreadStatic] private static float[]? t_scratch;

        public void Execute(int taskIndex)
        {
            var (p, st, c0, len) = opt._work[taskIndex];
            var scratch = t_scratch ??= new float[2 * Chunk];
            var m = st.M32 is not null ? st.M32.AsSpan(c0, len) : scratch.AsSpan(0, len);
            var v = st.V32 is not null ? st.V32.AsSpan(c0, len) : scratch.AsSpan(Chunk, len);
            if (st.M16 is not null)
            {
                NumericFormats.Bf16ToFloat(st.M16.AsSpan(c0, len), m);
                NumericFormats.Bf16ToFloat(st.V16!.AsSpan(c0, len), v);
            }
            bool decayed = p.WeightDecay && opt.WeightDecay > 0;
            StepChunk(opt.Beta1, opt.Beta2, opt.Eps, p.Grad.AsSpan(c0, len), m, v, p.Span.Slice(c0, len), lr, bc1, bc2, decayed ? decay : 1f);
            if (st.M16 is not null)
            {
                NumericFormats.FloatToBf16(m, st.M16.AsSpan(c0, len));
                NumericFormats.FloatToBf16(v, st.V16!.AsSpan(c0, len));
            }
        }
    }

    /// <summary>
    /// One fused pass over a chunk (each element read and written once instead of eleven library passes); the
    /// arithmetic is the same sequence of separately rounded operations as the reference formula. Every element's
    /// result depends only on its own inputs (the vector and scalar paths round alike), so a ZeRO-1 shard updated
    /// alone (<see cref="Distributed.ShardedAdamW"/>) gets the bits a whole-parameter update gives it.
    /// </summary>
    internal static unsafe void StepChunk(float beta1, float beta2, float eps, Span<float> g, Span<float> m, Span<float> v, Span<float> w,
        float lr, float bc1, float bc2, float decay)
    {
        // m = β1·m + (1−β1)·g ; v = β2·v + (1−β2)·g² ; w −= lr·(m̂ / (sqrt(v̂) + ε) + λ·w) with w·decay = w − lr·λ·w
        int n = g.Length, i = 0;
        float b1 = beta1, b2 = beta2, c1 = 1f - beta1, c2 = 1f - beta2, invBc2 = 1f / bc2, step = -lr / bc1;
        fixed (float* pg = g) fixed (float* pm = m) fixed (float* pv = v) fixed (float* pw = w)
        {
            for (; i + 16 <= n; i += 16)
            {
                var gi = Vector512.Load(pg + i);
                var mi = Vector512.Load(pm + i) * Vector512.Create(b1) + gi * Vector512.Create(c1);
                var vi = Vector512.Load(pv + i) * Vector512.Create(b2) + gi * gi * Vector512.Create(c2);
                var wi = Vector512.Load(pw + i);
                if (decay != 1f) wi *= Vector512.Create(decay);
                var update = mi / (Vector512.Sqrt(vi * Vector512.Create(invBc2)) + Vector512.Create(eps));
                mi.Store(pm + i);
                vi.Store(pv + i);
                (update * Vector512.Create(step) + wi).Store(pw + i);
            }
            for (; i < n; i++)
            {
                float gi = pg[i];
                float mi = pm[i] * b1 + gi * c1, vi = pv[i] * b2 + gi * gi * c2;
                float wi = decay != 1f ? pw[i] * decay : pw[i];
                pm[i] = mi;
                pv[i] = vi;
                pw[i] = mi / (MathF.Sqrt(vi * invBc2) + eps) * step + wi;
            }
        }
    }

    /// <summary>
    /// Restores the step count and the moments of named parameters (resume); BF16 moments are rounded from them.
    /// After any step every trained parameter has moments, so one missing is an error, not a silent zero.
    /// </summary>
    public void LoadState(long step, IReadOnlyDictionary<string, (float[] M, float[] V)> moments)
    {
        if (step > 0)
            foreach (var (name, p) in _params)
                if (p.RequiresGrad && !moments.ContainsKey(name)) throw new DeepSeekSharpException($"optimizer state for '{name}' is missing");
        Step = step;
        foreach (var (name, p) in _params)
            if (moments.TryGetValue(name, out var st))
            {
                if (st.M.Length != p.Length || st.V.Length != p.Length) throw new DeepSeekSharpException($"optimizer state for '{name}' has the wrong size");
                var state = new MomentState((int)p.Length, Moments);
                state.Set(st.M, st.V);
                _state[p] = state;
            }
    }

    /// <summary>Moments per parameter name, as fp32 (for checkpointing; BF16 moments widen exactly).</summary>
    public IEnumerable<(string Name, float[] M, float[] V)> State()
    {
        foreach (var (name, p) in _params)
            if (_state.TryGetValue(p, out var st)) yield return (name, st.MAsFloat(), st.VAsFloat());
    }

    private sealed class MomentState
    {
        public MomentState(int n, MomentPrecision precision)
        {
            if (precision == MomentPrecision.Bf16) (M16, V16) = (new ushort[n], new ushort[n]);
            else (M32, V32) = (new float[n], new float[n]);
        }

        public float[]? M32 { get; }
        public float[]? V32 { get; }
        public ushort[]? M16 { get; }
        public ushort[]? V16 { get; }

        public long Bytes => M32 is not null ? 8L * M32.Length : 4L * M16!.Length;

        public void Set(float[] m, float[] v)
        {
            if (M32 is not null) { m.CopyTo(M32, 0); v.CopyTo(V32!, 0); }
            else { NumericFormats.FloatToBf16(m, M16); NumericFormats.FloatToBf16(v, V16); }
        }

        public float[] MAsFloat() => M32 ?? Widen(M16!);
        public float[] VAsFloat() => V32 ?? Widen(V16!);

        private static float[] Widen(ushort[] h)
        {
            var f = new float[h.Length];
            NumericFormats.Bf16ToFloat(h, f);
            return f;
        }
    }
}
