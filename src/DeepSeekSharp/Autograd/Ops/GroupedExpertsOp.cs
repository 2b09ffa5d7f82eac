using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// All routed SwiGLU experts of an MoE layer as grouped GEMMs (model.md, DeepSeekMoE; expert e:
/// y = W_down,e · (silu(W_gate,e · x) ⊙ W_up,e · x)). Tokens arrive grouped by expert (rows[offsets[e]..offsets[e+1])
/// are expert e's); every projection of every expert is one <see cref="IBackend.GroupedGemm"/> call, gate and up
/// together, so the backend spreads all experts' tiles over its cores at once. Outputs come back stacked [S, H] in the
/// grouped order, like <see cref="RoutedExpertsOp"/>, whose per-module path remains for experts this op cannot run
/// (BF16 compute, adapters that are not low-rank; FP8 compute has its own grouped op, <see cref="GroupedFp8ExpertsOp"/>).
/// <para>
/// Each projection of an expert is an <see cref="ExpertLinear"/>: an fp32 weight, or a frozen weight kept as stored
/// (BF16, FP8 blocks), which the forward GEMMs read in place and the backward widens into pooled scratch one weight at a
/// time per worker for the input gradient (no fp32 copy outlives its GEMM), and optionally a LoRA path (<see cref="GroupedLowRank"/>: two more grouped
/// calls per adapted projection).
/// </para>
/// <para>
/// For the backward it keeps only the SwiGLU inputs (gate and up projections, [S, I] each) and recomputes the SwiGLU
/// output, as DeepSeek-V3 does; the gathered expert inputs are not kept either: the weight gradients read the layer
/// input's rows in place through the grouped GEMM's row gather. Frozen expert weights (ESFT, LoRA, a stored base) get
/// no gradient work.
/// </para>
/// </summary>
internal sealed class GroupedExpertsOp : GradNode
{
    private readonly int[] _rows;
    private readonly int[] _offsets;
    private readonly int[] _active;
    private readonly ExpertLinear[] _gate, _up, _down;
    private readonly GroupedLowRank? _gateLowRank, _upLowRank, _downLowRank;
    private readonly int _hidden, _inter;
    private float[]? _gateOut, _upOut;
    private static long s_calls;

    /// <summary>How many layers ran through this op so far (tests check which expert path a model takes).</summary>
    internal static long Calls => Interlocked.Read(ref s_calls);

    private GroupedExpertsOp(Tensor[] inputs, int[] rows, int[] offsets, int[] active, ExpertLinear[][] projections,
        GroupedLowRank?[] lowRank, float[] gateOut, float[] upOut) : base(inputs)
    {
        (_rows, _offsets, _active) = (rows, offsets, active);
        (_gate, _up, _down) = (projections[0], projections[1], projections[2]);
        (_gateLowRank, _upLowRank, _downLowRank) = (lowRank[0], lowRank[1], lowRank[2]);
        (_hidden, _inter) = (_gate[0].InFeatures, _gate[0].OutFeatures);
        (_gateOut, _upOut) = (gateOut, upOut);
    }

    public override bool ReadsOutput => false;

    /// <summary>Whether this op can run these experts: every projection's adapters share a rank.</summary>
    public static bool Supports(IReadOnlyList<ExpertLinear> gate, IReadOnlyList<ExpertLinear> up, IReadOnlyList<ExpertLinear> down) =>
        GroupedLowRank.Supports(gate) && GroupedLowRank.Supports(up) && GroupedLowRank.Supports(down);

    /// <param name="x">[N, H]</param>
    /// <param name="rows">token index of every stacked row, grouped by expert</param>
    /// <param name="offsets">[E + 1]: expert e owns stacked rows offsets[e]..offsets[e+1]</param>
    /// <param name="gate">E projections [I, H]</param>
    /// <param name="up">E projections [I, H]</param>
    /// <param name="down">E projections [H, I]</param>
    /// <returns>[S, H] with S = rows.Length</returns>
    public static Tensor Forward(Tensor x, int[] rows, int[] offsets, IReadOnlyList<ExpertLinear> gate, IReadOnlyList<ExpertLinear> up,
        IReadOnlyList<ExpertLinear> down)
    {
        int hidden = x.Shape[^1], n = OpBase.Rows(x), experts = gate.Count, s = rows.Length;
        if (up.Count != experts || down.Count != experts || offsets.Length != experts + 1)
            throw new ArgumentException($"grouped experts: {experts} gate, {up.Count} up, {down.Count} down weights, {offsets.Length} offsets");
        int inter = gate[0].OutFeatures;
        for (int e = 0; e < experts; e++)
        {
            CheckShape(gate[e], inter, hidden, "gate_proj", e);
            CheckShape(up[e], inter, hidden, "up_proj", e);
            CheckShape(down[e], hidden, inter, "down_proj", e);
        }
        if (!Supports(gate, up, down)) throw new ArgumentException("grouped experts: the adapters of a projection must share one rank");
        int[] active = ExpertRows.ActiveExperts(rows, offsets, n, "grouped experts");
        Interlocked.Increment(ref s_calls);

        var be = x.Backend;
        float[] gathered = StoragePool.Rent(s * hidden);                                     // x[rows] [S, H]
        Gather(be, x.Data, rows, hidden, gathered);
        float[] gateOut = StoragePool.Rent(s * inter), upOut = StoragePool.Rent(s * inter); // [S, I] each
        Project(be, active, offsets, [(gate, gateOut), (up, upOut)], gathered, hidden, inter);
        var gateLowRank = GroupedLowRank.Forward(be, gate, active, offsets, gathered, gateOut);
        var upLowRank = GroupedLowRank.Forward(be, up, active, offsets, gathered, upOut);
        StoragePool.Return(gathered);

        float[] h = StoragePool.Rent(s * inter);                                              // silu(gate) ⊙ up [S, I]
        be.SiluMulForward(gateOut.AsSpan(0, s * inter), upOut.AsSpan(0, s * inter), h.AsSpan(0, s * inter));
        var y = Tensor.Empty(s, hidden);
        Project(be, active, offsets, [(down, y.Data)], h, inter, hidden);
        var downLowRank = GroupedLowRank.Forward(be, down, active, offsets, h, y.Data);
        StoragePool.Return(h);

        var inputs = new List<Tensor> { x };
        foreach (var projection in (IReadOnlyList<ExpertLinear>[])[gate, up, down]) inputs.AddRange(projection.Select(p => p.Weight));
        foreach (var projection in (IReadOnlyList<ExpertLinear>[])[gate, up, down]) inputs.AddRange(GroupedLowRank.Parameters(projection));
        GroupedLowRank?[] lowRank = [gateLowRank, upLowRank, downLowRank];
        if (!OpBase.WillRecord([.. inputs]))
        {
            StoragePool.Return(gateOut);
            StoragePool.Return(upOut);
            foreach (var l in lowRank) l?.Release();
            return y;
        }
        y.GradFn = new GroupedExpertsOp([.. inputs], rows, offsets, active, [[.. gate], [.. up], [.. down]], lowRank, gateOut, upOut);
        y.RequiresGrad = true;
        return y;
    }

    private static void CheckShape(ExpertLinear w, int rows, int cols, string what, int e)
    {
        if (w.Weight.Rank != 2 || w.OutFeatures != rows || w.InFeatures != cols)
            throw new ArgumentException($"grouped experts: expert {e} {what} is [{string.Join(", ", w.Weight.Shape)}], expected [{rows}, {cols}]");
    }

    /// <summary>
    /// Y_p[rows_e] = X[rows_e]·W_p,eᵀ for every projection p and active expert e: the fp32 weights in one grouped call,
    /// then the stored ones (frozen BF16/FP8), the experts concurrently, each GEMM reading its weight in place
    /// (<see cref="IBackend.GemmCompressedWeight"/> widens inside its packing). Measured against widening each stored
    /// weight into pooled scratch and joining the grouped call (LoRA r 16 over an FP8 bench-medium, 2 threads): 4–6 %
    /// slower and 40 MB more peak RSS, since widening adds a write and a read of the fp32 copy per weight.
    /// </summary>
    private static void Project(IBackend be, int[] active, int[] offsets, (IReadOnlyList<ExpertLinear> W, float[] Y)[] projections,
        float[] input, int inDim, int outDim)
    {
        var groups = new List<GemmGroup>(active.Length * projections.Length);
        var stored = new List<(int Expert, CompressedWeight Weight, float[] Y)>();
        foreach (int e in active)
        {
            int off = offsets[e], count = offsets[e + 1] - off;
            foreach (var (w, y) in projections)
                if (w[e].Stored is { } compressed) stored.Add((e, compressed, y));
                else groups.Add(new GemmGroup(count, outDim, inDim, input, off * inDim, w[e].Weight.Data, 0, y, off * outDim));
        }
        be.GroupedGemm(false, true, 1f, 0f, inDim, inDim, outDim, CollectionsMarshal.AsSpan(groups), []);
        be.RunConcurrently(stored.Count, i =>
        {
            var (e, weight, y) = stored[i];
            int off = offsets[e], count = offsets[e + 1] - off;
            be.GemmCompressedWeight(count, input.AsSpan(off * inDim, count * inDim), weight, y.AsSpan(off * outDim, count * outDim));
        });
    }

    /// <summary>dst[r] = x[rows[r]] for every stacked row, in parallel blocks of rows.</summary>
    private static void Gather(IBackend be, float[] x, int[] rows, int hidden, float[] dst)
    {
        const int BlockRows = 256;
        int blocks = (rows.Length + BlockRows - 1) / BlockRows;
        be.RunConcurrently(blocks, b =>
        {
            int end = Math.Min(rows.Length, (b + 1) * BlockRows);
            for (int r = b * BlockRows; r < end; r++)
                x.AsSpan(rows[r] * hidden, hidden).CopyTo(dst.AsSpan(r * hidden, hidden));
        });
    }

    /// <summary>
    /// Expert-major, the experts concurrently (largest first): each expert's backward runs whole on one worker, so its
    /// slices of dy, the SwiGLU inputs and its gathered tokens stay in that core's cache from one product to the next.
    /// Measured against phase-major grouped calls over all experts (each phase streaming every expert's data through
    /// the cache): the MoE layer's backward took 1.2–1.4x as long on one thread (MoeExpertsBenchmarks, and timed inside
    /// a bench-small training step).
    /// </summary>
    public override void Backward(Tensor output, float[] dy)
    {
        float[] gate = _gateOut ?? throw new InvalidOperationException("grouped experts: backward ran twice");
        float[] up = _upOut!;
        _gateOut = _upOut = null;
        int s = _rows.Length, hidden = _hidden;
        Tensor x = Inputs[0];
        var be = x.Backend;
        float[]? dx = GradArrayOf(x);
        float[]? dxs = dx is null ? null : StoragePool.Rent(s * hidden);
        // Gradient buffers are created here, on one thread; the pieces only fill them.
        var grads = new Dictionary<Tensor, float[]?>(ReferenceEqualityComparer.Instance);
        foreach (int e in _active)
            foreach (var w in (ReadOnlySpan<ExpertLinear>)[_gate[e], _up[e], _down[e]])
                grads[w.Weight] = w.TrainsWeight ? GradArrayOf(w.Weight) : null;
        foreach (var lowRank in (ReadOnlySpan<GroupedLowRank?>)[_gateLowRank, _upLowRank, _downLowRank])
            if (lowRank is not null)
                foreach (var (t, g) in lowRank.GradientArrays(_active, GradArrayOf)) grads[t] = g;
        int[] order = (int[])_active.Clone();
        Array.Sort(order, (a, b) => (_offsets[b + 1] - _offsets[b]).CompareTo(_offsets[a + 1] - _offsets[a]));
        try
        {
            float[] xData = x.Data;
            be.RunConcurrently(order.Length, i => BackwardExpert(order[i], be, dy, gate, up, xData, grads, dxs));
            if (dx is not null) ExpertRows.ScatterAdd(dx, dxs!, _rows, 0, s, hidden);
        }
        finally
        {
            if (dxs is not null) StoragePool.Return(dxs);
            StoragePool.Return(gate);
            StoragePool.Return(up);
            _gateLowRank?.Release();
            _upLowRank?.Release();
            _downLowRank?.Release();
        }
    }

    private void BackwardExpert(int e, IBackend be, float[] dy, float[] gate, float[] up, float[] x,
        IReadOnlyDictionary<Tensor, float[]?> grads, float[]? dxs)
    {
        int hidden = _hidden, inter = _inter;
        int off = _offsets[e], count = _offsets[e + 1] - off, ci = count * inter;
        float[]? dwGate = grads[_gate[e].Weight], dwUp = grads[_up[e].Weight], dwDown = grads[_down[e].Weight];
        var dyE = dy.AsSpan(off * hidden, count * hidden);
        var gateE = gate.AsSpan(off * inter, ci);
        var upE = up.AsSpan(off * inter, ci);
        bool downAdapted = _down[e].Adapter is not null, inputAdapted = _gate[e].Adapter is not null || _up[e].Adapter is not null;
        float[] dh = StoragePool.Rent(ci), dgate = StoragePool.Rent(ci), dup = StoragePool.Rent(ci);
        float[]? xE = null;
        try
        {
            // dh = dy_e · W_down (+ the low-rank path's input gradient); dW_down += dy_eᵀ · h_e with h_e = silu(gate_e) ⊙ up_e recomputed.
            Multiply(be, _down[e], count, dyE, dh, beta: 0f);
            if (dwDown is not null || downAdapted)
            {
                float[] h = StoragePool.Rent(ci);
                be.SiluMulForward(gateE, upE, h.AsSpan(0, ci));
                if (dwDown is not null) be.Gemm(true, false, hidden, inter, count, 1f, dyE, hidden, h, inter, 1f, dwDown, inter);
                _downLowRank?.BackwardExpert(be, e, dyE, h.AsSpan(0, ci), dh.AsSpan(0, ci), grads);
                StoragePool.Return(h);
            }
            be.SiluMulBackward(gateE, upE, dh.AsSpan(0, ci), dgate.AsSpan(0, ci), dup.AsSpan(0, ci), accumulate: false);
            // dW_gate += dgate_eᵀ · x[rows_e], dW_up += dup_eᵀ · x[rows_e] (one grouped call over the two).
            if (dwGate is not null || dwUp is not null)
            {
                Span<GemmGroup> groups = new GemmGroup[2];
                int n = 0;
                if (dwGate is not null) groups[n++] = new GemmGroup(inter, hidden, count, dgate, 0, x, 0, dwGate, 0, BRowsOffset: off);
                if (dwUp is not null) groups[n++] = new GemmGroup(inter, hidden, count, dup, 0, x, 0, dwUp, 0, BRowsOffset: off);
                be.GroupedGemm(true, false, 1f, 1f, inter, hidden, hidden, groups[..n], _rows);
            }
            // dx_e = dgate_e · W_gate + dup_e · W_up (+ the low-rank paths), stacked; summed per token afterwards (a token has k experts).
            var dxE = dxs is null ? default : dxs.AsSpan(off * hidden, count * hidden);
            if (!dxE.IsEmpty)
            {
                Multiply(be, _gate[e], count, dgate, dxE, beta: 0f);
                Multiply(be, _up[e], count, dup, dxE, beta: 1f);
            }
            if (inputAdapted)
            {
                xE = StoragePool.Rent(count * hidden);                                       // x[rows_e] [c, H]
                for (int r = 0; r < count; r++) x.AsSpan(_rows[off + r] * hidden, hidden).CopyTo(xE.AsSpan(r * hidden, hidden));
                _gateLowRank?.BackwardExpert(be, e, dgate.AsSpan(0, ci), xE.AsSpan(0, count * hidden), dxE, grads);
                _upLowRank?.BackwardExpert(be, e, dup.AsSpan(0, ci), xE.AsSpan(0, count * hidden), dxE, grads);
            }
        }
        finally
        {
            StoragePool.Return(dh);
            StoragePool.Return(dgate);
            StoragePool.Return(dup);
            if (xE is not null) StoragePool.Return(xE);
        }
    }

    /// <summary>dIn [c, in] = dOut [c, out] · W + beta·dIn, W widened for the call when stored compressed.</summary>
    private static void Multiply(IBackend be, ExpertLinear w, int count, ReadOnlySpan<float> dOut, Span<float> dIn, float beta)
    {
        int inDim = w.InFeatures, outDim = w.OutFeatures;
        float[] weight = w.AcquireWeight();
        try { be.Gemm(false, false, count, inDim, outDim, 1f, dOut, outDim, weight, inDim, beta, dIn, inDim); }
        finally { w.ReleaseWeight(weight); }
    }
}
