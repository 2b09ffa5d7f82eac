using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// All routed SwiGLU experts of an MoE layer as grouped GEMMs (model.md, DeepSeekMoE; expert e:
/// y = W_down,e · (silu(W_gate,e · x) ⊙ W_up,e · x)). Tokens arrive grouped by expert (rows[offsets[e]..offsets[e+1])
/// are expert e's); every projection of every expert is one <see cref="IBackend.GroupedGemm"/> call, gate and up
/// together, so the backend spreads all experts' tiles over its cores at once. Outputs come back stacked [S, H] in the
/// grouped order, like <see cref="RoutedExpertsOp"/>, whose per-module path remains for experts this op cannot run
/// (FP8, BF16 or adapted Linears, FP8 SwiGLU caches).
/// <para>
/// For the backward it keeps only the SwiGLU inputs (gate and up projections, [S, I] each) and recomputes the SwiGLU
/// output, as DeepSeek-V3 does; the gathered expert inputs are not kept either: the weight gradients read the layer
/// input's rows in place through the grouped GEMM's row gather. Frozen expert weights (ESFT) get no gradient work.
/// </para>
/// </summary>
internal sealed class GroupedExpertsOp : GradNode
{
    private readonly int[] _rows;
    private readonly int[] _offsets;
    private readonly int[] _active;
    private readonly int _experts, _hidden, _inter;
    private float[]? _gate, _up;
    private static long s_calls;

    /// <summary>How many layers ran through this op so far (tests check which expert path a model takes).</summary>
    internal static long Calls => Interlocked.Read(ref s_calls);

    private GroupedExpertsOp(Tensor[] inputs, int[] rows, int[] offsets, int[] active, int experts, int hidden, int inter,
        float[] gate, float[] up) : base(inputs)
    {
        (_rows, _offsets, _active, _experts, _hidden, _inter, _gate, _up) = (rows, offsets, active, experts, hidden, inter, gate, up);
    }

    public override bool ReadsOutput => false;

    /// <param name="x">[N, H]</param>
    /// <param name="rows">token index of every stacked row, grouped by expert</param>
    /// <param name="offsets">[E + 1]: expert e owns stacked rows offsets[e]..offsets[e+1]</param>
    /// <param name="gateWeights">E weights [I, H]</param>
    /// <param name="upWeights">E weights [I, H]</param>
    /// <param name="downWeights">E weights [H, I]</param>
    /// <returns>[S, H] with S = rows.Length</returns>
    public static Tensor Forward(Tensor x, int[] rows, int[] offsets, IReadOnlyList<Tensor> gateWeights, IReadOnlyList<Tensor> upWeights,
        IReadOnlyList<Tensor> downWeights)
    {
        int hidden = x.Shape[^1], n = OpBase.Rows(x), experts = gateWeights.Count, s = rows.Length;
        if (upWeights.Count != experts || downWeights.Count != experts || offsets.Length != experts + 1)
            throw new ArgumentException($"grouped experts: {experts} gate, {upWeights.Count} up, {downWeights.Count} down weights, {offsets.Length} offsets");
        int inter = gateWeights[0].Shape[0];
        for (int e = 0; e < experts; e++)
        {
            CheckShape(gateWeights[e], inter, hidden, "gate_proj", e);
            CheckShape(upWeights[e], inter, hidden, "up_proj", e);
            CheckShape(downWeights[e], hidden, inter, "down_proj", e);
        }
        int[] active = ExpertRows.ActiveExperts(rows, offsets, n, "grouped experts");
        Interlocked.Increment(ref s_calls);

        var be = x.Backend;
        float[] xData = x.Data;
        float[] gathered = StoragePool.Rent(s * hidden);
        Gather(be, xData, rows, hidden, gathered);
        float[] gate = StoragePool.Rent(s * inter), up = StoragePool.Rent(s * inter);
        var groups = new GemmGroup[2 * active.Length];
        for (int i = 0; i < active.Length; i++)
        {
            int e = active[i], off = offsets[e], count = offsets[e + 1] - off;
            groups[2 * i] = new GemmGroup(count, inter, hidden, gathered, off * hidden, gateWeights[e].Data, 0, gate, off * inter);
            groups[2 * i + 1] = new GemmGroup(count, inter, hidden, gathered, off * hidden, upWeights[e].Data, 0, up, off * inter);
        }
        be.GroupedGemm(false, true, 1f, 0f, hidden, hidden, inter, groups, []);
        StoragePool.Return(gathered);

        float[] h = StoragePool.Rent(s * inter);
        be.SiluMulForward(gate.AsSpan(0, s * inter), up.AsSpan(0, s * inter), h.AsSpan(0, s * inter));
        var y = Tensor.Empty(s, hidden);
        float[] yData = y.Data;
        groups = new GemmGroup[active.Length];
        for (int i = 0; i < active.Length; i++)
        {
            int e = active[i], off = offsets[e], count = offsets[e + 1] - off;
            groups[i] = new GemmGroup(count, hidden, inter, h, off * inter, downWeights[e].Data, 0, yData, off * hidden);
        }
        be.GroupedGemm(false, true, 1f, 0f, inter, inter, hidden, groups, []);
        StoragePool.Return(h);

        var inputs = new Tensor[1 + 3 * experts];
        inputs[0] = x;
        for (int e = 0; e < experts; e++)
            (inputs[1 + e], inputs[1 + experts + e], inputs[1 + 2 * experts + e]) = (gateWeights[e], upWeights[e], downWeights[e]);
        if (!OpBase.WillRecord(inputs))
        {
            StoragePool.Return(gate);
            StoragePool.Return(up);
            return y;
        }
        y.GradFn = new GroupedExpertsOp(inputs, rows, offsets, active, experts, hidden, inter, gate, up);
        y.RequiresGrad = true;
        return y;
    }

    private static void CheckShape(Tensor w, int rows, int cols, string what, int e)
    {
        if (w.Rank != 2 || w.Shape[0] != rows || w.Shape[1] != cols)
            throw new ArgumentException($"grouped experts: expert {e} {what} is [{string.Join(", ", w.Shape)}], expected [{rows}, {cols}]");
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
        float[] gate = _gate ?? throw new InvalidOperationException("grouped experts: backward ran twice");
        float[] up = _up!;
        _gate = _up = null;
        int s = _rows.Length, hidden = _hidden, experts = _experts;
        Tensor x = Inputs[0];
        var be = x.Backend;
        float[]? dx = GradArrayOf(x);
        float[]? dxs = dx is null ? null : StoragePool.Rent(s * hidden);
        // Gradient buffers are created here, on one thread; the pieces only fill them.
        var dWeights = new float[]?[3 * experts];
        foreach (int e in _active)
            for (int j = 0; j < 3; j++) dWeights[j * experts + e] = GradArrayOf(Inputs[1 + j * experts + e]);
        int[] order = (int[])_active.Clone();
        Array.Sort(order, (a, b) => (_offsets[b + 1] - _offsets[b]).CompareTo(_offsets[a + 1] - _offsets[a]));
        try
        {
            float[] xData = x.Data;
            be.RunConcurrently(order.Length, i => BackwardExpert(order[i], be, dy, gate, up, xData, dWeights, dxs));
            if (dx is not null) ExpertRows.ScatterAdd(dx, dxs!, _rows, 0, s, hidden);
        }
        finally
        {
            if (dxs is not null) StoragePool.Return(dxs);
            StoragePool.Return(gate);
            StoragePool.Return(up);
        }
    }

    private void BackwardExpert(int e, IBackend be, float[] dy, float[] gate, float[] up, float[] x, float[]?[] dWeights, float[]? dxs)
    {
        int hidden = _hidden, inter = _inter, experts = _experts;
        int off = _offsets[e], count = _offsets[e + 1] - off, ci = count * inter;
        float[] wGate = Inputs[1 + e].Data, wUp = Inputs[1 + experts + e].Data, wDown = Inputs[1 + 2 * experts + e].Data;
        float[]? dwGate = dWeights[e], dwUp = dWeights[experts + e], dwDown = dWeights[2 * experts + e];
        var dyE = dy.AsSpan(off * hidden, count * hidden);
        var gateE = gate.AsSpan(off * inter, ci);
        var upE = up.AsSpan(off * inter, ci);
        float[] dh = StoragePool.Rent(ci), dgate = StoragePool.Rent(ci), dup = StoragePool.Rent(ci);
        try
        {
            // dh = dy_e · W_down; dW_down += dy_eᵀ · h_e with h_e = silu(gate_e) ⊙ up_e recomputed.
            be.Gemm(false, false, count, inter, hidden, 1f, dyE, hidden, wDown, inter, 0f, dh, inter);
            if (dwDown is not null)
            {
                float[] h = StoragePool.Rent(ci);
                be.SiluMulForward(gateE, upE, h.AsSpan(0, ci));
                be.Gemm(true, false, hidden, inter, count, 1f, dyE, hidden, h, inter, 1f, dwDown, inter);
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
            // dx_e = dgate_e · W_gate + dup_e · W_up, stacked; summed per token afterwards (a token has k experts).
            if (dxs is not null)
            {
                var dxE = dxs.AsSpan(off * hidden, count * hidden);
                be.Gemm(false, false, count, hidden, inter, 1f, dgate, inter, wGate, hidden, 0f, dxE, hidden);
                be.Gemm(false, false, count, hidden, inter, 1f, dup, inter, wUp, hidden, 1f, dxE, hidden);
            }
        }
        finally
        {
            StoragePool.Return(dh);
            StoragePool.Return(dgate);
            StoragePool.Return(dup);
        }
    }
}
