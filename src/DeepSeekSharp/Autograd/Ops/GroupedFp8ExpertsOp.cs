using System.Runtime.InteropServices;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// The routed SwiGLU experts of an MoE layer with DeepSeek-V3's FP8 recipe (training.md, FP8; docs/fp8.md) as grouped
/// GEMMs: the computation of one <see cref="Fp8LinearOp"/> per projection and a <see cref="SiluMulOp"/> per expert,
/// with the experts' forward GEMMs in one <see cref="IBackend.GroupedGemmE4M3"/> call per projection (gate and up
/// together), like <see cref="GroupedExpertsOp"/> for fp32 weights.
/// <list type="bullet">
/// <item>Forward: x in 1×128 E4M3 tiles (quantised once for its N tokens: a token's tiles are the same whichever expert
/// reads them) times each expert's W in 128×128 tiles; h = silu(gate) ⊙ up from the fp32 products, then h in 1×128
/// tiles times W_down.</item>
/// <item>Kept for the backward: x's codes [N, H], the SwiGLU inputs gate and up [S, I] as E4M3 codes (1×128, as
/// <see cref="SiluMulOp"/>'s FP8 cache; fp32 when the cache is off), h's codes [S, I] and the weights' codes — no fp32
/// activation.</item>
/// <item>Backward, expert by expert concurrently (largest first, each on one worker): dy in 1×128 tiles times W for the
/// input gradients; for the weight gradients dy and the (decoded) cached input requantised in 128×1 tiles over that
/// expert's rows — the very calls <see cref="Fp8LinearOp.Backward"/> makes on the expert's rows, in the order the
/// module path runs them (down, then gate, then up), so every gradient is bit for bit the module path's.</item>
/// </list>
/// The GEMMs decode E4M3 while packing (<see cref="IBackend.GemmE4M3"/>): no fp32 copy of x, W or dy is made.
/// </summary>
internal sealed class GroupedFp8ExpertsOp : GradNode
{
    private readonly int[] _rows, _offsets, _active;
    private readonly int _hidden, _inter, _experts;
    private readonly Fp8Tensor?[] _weights;                // [3·E]: gate, up, down of expert e at e, E + e, 2E + e (128×128)
    private Fp8Tensor? _x;                                 // x [N, H], 1×128
    private SwiGluCache? _swiglu;                          // gate, up [S, I]
    private Fp8Tensor? _h;                                 // silu(gate) ⊙ up [S, I], 1×128
    [ThreadStatic] private static long t_calls;

    /// <summary>How many layers ran through this op on the calling thread so far (tests check which expert path a model
    /// takes; per thread, so tests running side by side do not count each other's layers).</summary>
    internal static long Calls => t_calls;

    private GroupedFp8ExpertsOp(Tensor[] inputs, int[] rows, int[] offsets, int[] active, int hidden, int inter, Fp8Tensor?[] weights,
        Fp8Tensor x, SwiGluCache swiglu, Fp8Tensor h) : base(false, inputs)
    {
        (_rows, _offsets, _active, _hidden, _inter, _experts) = (rows, offsets, active, hidden, inter, offsets.Length - 1);
        (_weights, _x, _swiglu, _h) = (weights, x, swiglu, h);
    }

    public override bool ReadsOutput => false;

    /// <param name="x">[N, H]</param>
    /// <param name="rows">token index of every stacked row, grouped by expert</param>
    /// <param name="offsets">[E + 1]: expert e owns stacked rows offsets[e]..offsets[e+1]</param>
    /// <param name="gate">E weights [I, H] (fp32 masters)</param>
    /// <param name="up">E weights [I, H]</param>
    /// <param name="down">E weights [H, I]</param>
    /// <param name="fp8SwiGluCache">keep the SwiGLU inputs as E4M3 codes (V3's recipe) rather than fp32</param>
    /// <returns>[S, H] with S = rows.Length</returns>
    public static Tensor Forward(Tensor x, int[] rows, int[] offsets, IReadOnlyList<Tensor> gate, IReadOnlyList<Tensor> up,
        IReadOnlyList<Tensor> down, bool fp8SwiGluCache)
    {
        int hidden = x.Shape[^1], n = OpBase.Rows(x), experts = gate.Count, s = rows.Length;
        if (up.Count != experts || down.Count != experts || offsets.Length != experts + 1)
            throw new ArgumentException($"grouped fp8 experts: {experts} gate, {up.Count} up, {down.Count} down weights, {offsets.Length} offsets");
        int inter = gate[0].Shape[0];
        for (int e = 0; e < experts; e++)
        {
            CheckShape(gate[e], inter, hidden, "gate_proj", e);
            CheckShape(up[e], inter, hidden, "up_proj", e);
            CheckShape(down[e], hidden, inter, "down_proj", e);
        }
        int[] active = ExpertRows.ActiveExperts(rows, offsets, n, "grouped fp8 experts");
        t_calls++;
        var be = x.Backend;
        Tensor[] inputs = [x, .. gate, .. up, .. down];
        bool record = OpBase.WillRecord(inputs);

        // Every active expert's three weights in 128×128 tiles, the weights concurrently.
        var weights = new Fp8Tensor?[3 * experts];
        be.RunConcurrently(3 * active.Length, i =>
        {
            int e = active[i % active.Length], projection = i / active.Length;
            Tensor w = (projection == 0 ? gate : projection == 1 ? up : down)[e];
            var q = Fp8Quantizer.Rent(w.Shape[0], w.Shape[1], 128, 128);
            be.QuantizeE4M3(w.Span, w.Shape[0], w.Shape[1], 128, 128, q.Codes, q.Scales, []);
            weights[projection * experts + e] = q;
        });

        // x [N, H] in 1×128 tiles, then its codes and scales gathered into the stacked order [S, H] the GEMM reads.
        var xq = Fp8Quantizer.Rent(n, hidden, 1, 128);
        be.QuantizeE4M3(x.Span, n, hidden, 1, 128, xq.Codes, xq.Scales, []);
        var xs = Fp8Quantizer.Rent(s, hidden, 1, 128);
        GatherRows(be, xq, rows, xs);

        float[] gateOut = StoragePool.Rent(s * inter), upOut = StoragePool.Rent(s * inter);   // [S, I] each
        var groups = new List<E4M3GemmGroup>(2 * active.Length);
        foreach (int e in active)
        {
            int off = offsets[e], count = offsets[e + 1] - off;
            groups.Add(new E4M3GemmGroup(count, inter, hidden, xs, off, weights[e]!, gateOut, off * inter));
            groups.Add(new E4M3GemmGroup(count, inter, hidden, xs, off, weights[experts + e]!, upOut, off * inter));
        }
        be.GroupedGemmE4M3(true, CollectionsMarshal.AsSpan(groups), inter);
        Fp8Quantizer.Return(xs);

        // silu(gate) ⊙ up [S, I], expert by expert: the vectorised kernel computes a span's tail (and the seams where it
        // splits a span over threads) with the scalar exp, so only the expert's own span gives its module's bits.
        float[] h = StoragePool.Rent(s * inter);
        be.RunConcurrently(active.Length, i =>
        {
            int off = offsets[active[i]] * inter, length = offsets[active[i] + 1] * inter - off;
            be.SiluMulForward(gateOut.AsSpan(off, length), upOut.AsSpan(off, length), h.AsSpan(off, length));
        });
        var swiglu = record ? SwiGluCache.Keep(be, gateOut, upOut, s, inter, fp8SwiGluCache) : null;
        if (swiglu is not { Fp32: true })
        {
            StoragePool.Return(gateOut);
            StoragePool.Return(upOut);
        }
        var hq = Fp8Quantizer.Rent(s, inter, 1, 128);
        be.QuantizeE4M3(h.AsSpan(0, s * inter), s, inter, 1, 128, hq.Codes, hq.Scales, []);
        StoragePool.Return(h);

        var y = Tensor.Empty(s, hidden);
        groups.Clear();
        foreach (int e in active)
        {
            int off = offsets[e], count = offsets[e + 1] - off;
            groups.Add(new E4M3GemmGroup(count, hidden, inter, hq, off, weights[2 * experts + e]!, y.Data, off * hidden));
        }
        be.GroupedGemmE4M3(true, CollectionsMarshal.AsSpan(groups), hidden);

        if (!record)
        {
            Fp8Quantizer.Return(xq);
            Fp8Quantizer.Return(hq);
            foreach (var q in weights) if (q is not null) Fp8Quantizer.Return(q);
            return y;
        }
        y.GradFn = new GroupedFp8ExpertsOp(inputs, rows, offsets, active, hidden, inter, weights, xq, swiglu!, hq);
        y.RequiresGrad = true;
        return y;
    }

    private static void CheckShape(Tensor w, int rows, int cols, string what, int e)
    {
        if (w.Rank != 2 || w.Shape[0] != rows || w.Shape[1] != cols)
            throw new ArgumentException($"grouped fp8 experts: expert {e} {what} is [{string.Join(", ", w.Shape)}], expected [{rows}, {cols}]");
    }

    /// <summary>dst's row r = q's row rows[r] (codes and 1×128 scales), in parallel blocks of rows.</summary>
    private static void GatherRows(IBackend be, Fp8Tensor q, int[] rows, Fp8Tensor dst)
    {
        const int BlockRows = 256;
        int cols = q.Cols, scaleCols = q.ScaleCols, blocks = (rows.Length + BlockRows - 1) / BlockRows;
        be.RunConcurrently(blocks, b =>
        {
            int end = Math.Min(rows.Length, (b + 1) * BlockRows);
            for (int r = b * BlockRows; r < end; r++)
            {
                q.Codes.AsSpan(rows[r] * cols, cols).CopyTo(dst.Codes.AsSpan(r * cols, cols));
                q.Scales.AsSpan(rows[r] * scaleCols, scaleCols).CopyTo(dst.Scales.AsSpan(r * scaleCols, scaleCols));
            }
        });
    }

    public override void Backward(Tensor output, float[] dy)
    {
        var x = _x ?? throw new InvalidOperationException("grouped fp8 experts: backward ran twice");
        var (swiglu, h) = (_swiglu!, _h!);
        (_x, _swiglu, _h) = (null, null, null);
        int s = _rows.Length, hidden = _hidden;
        Tensor input = Inputs[0];
        var be = input.Backend;
        float[]? dx = GradArrayOf(input);
        float[]? dxs = dx is null ? null : StoragePool.RentZeroed(s * hidden);
        // Gradient buffers are created here, on one thread; the experts only fill them.
        var grads = new float[]?[3 * _experts];
        foreach (int e in _active)
            for (int p = 0; p < 3; p++) grads[p * _experts + e] = GradArrayOf(Inputs[1 + p * _experts + e]);
        int[] order = (int[])_active.Clone();
        Array.Sort(order, (a, b) => (_offsets[b + 1] - _offsets[b]).CompareTo(_offsets[a + 1] - _offsets[a]));
        try
        {
            be.RunConcurrently(order.Length, i => BackwardExpert(order[i], be, dy, x, swiglu, h, grads, dxs));
            if (dx is not null) ExpertRows.ScatterAdd(dx.AsSpan(0, checked((int)input.Length)), dxs!, _rows, 0, s, hidden);
        }
        finally
        {
            if (dxs is not null) StoragePool.Return(dxs);
            Fp8Quantizer.Return(x);
            Fp8Quantizer.Return(h);
            swiglu.Return();
            foreach (var q in _weights) if (q is not null) Fp8Quantizer.Return(q);
        }
    }

    private void BackwardExpert(int e, IBackend be, float[] dy, Fp8Tensor x, SwiGluCache swiglu, Fp8Tensor h, float[]?[] grads, float[]? dxs)
    {
        int hidden = _hidden, inter = _inter, experts = _experts;
        int off = _offsets[e], count = _offsets[e + 1] - off, ci = count * inter;
        float[]? dwGate = grads[e], dwUp = grads[experts + e], dwDown = grads[2 * experts + e];
        Fp8Tensor wGate = _weights[e]!, wUp = _weights[experts + e]!, wDown = _weights[2 * experts + e]!;
        var dyE = dy.AsSpan(off * hidden, count * hidden);                                        // [c, H]
        bool upstream = dxs is not null || dwGate is not null || dwUp is not null;
        // down_proj (its Fp8LinearOp): dh = dy_e (1×128) · W_down; dW_down += dy_eᵀ · h_e, both requantised in 128×1.
        float[]? dh = null;
        if (upstream)
        {
            dh = StoragePool.RentZeroed(ci);
            InputGradient(be, dyE, count, hidden, wDown, dh.AsSpan(0, ci), inter);
        }
        if (dwDown is not null)
        {
            var hc = ColumnTiles(be, h, off, count, null);
            WeightGradient(be, dyE, count, hidden, hc, dwDown);
            Fp8Quantizer.Return(hc);
        }
        if (dh is null) return;
        // SwiGLU (its SiluMulOp): differentiated at the cached (dequantised) inputs.
        float[] gd = StoragePool.Rent(ci), ud = StoragePool.Rent(ci), dgate = StoragePool.Rent(ci), dup = StoragePool.Rent(ci);
        Fp8Tensor? xc = null;
        try
        {
            swiglu.Read(off, count, inter, gd.AsSpan(0, ci), ud.AsSpan(0, ci));
            be.SiluMulBackward(gd.AsSpan(0, ci), ud.AsSpan(0, ci), dh.AsSpan(0, ci), dgate.AsSpan(0, ci), dup.AsSpan(0, ci), accumulate: false);
            // gate_proj, then up_proj (the module path's order: both add into the expert's input gradient).
            var dxE = dxs is null ? default : dxs.AsSpan(off * hidden, count * hidden);
            // x[rows_e] in 128×1 tiles, once for both weight gradients (each FP8 Linear of the module path makes the same codes).
            if (dwGate is not null || dwUp is not null) xc = ColumnTiles(be, x, off, count, _rows);
            foreach (var (dOut, w, dw) in (ReadOnlySpan<(float[], Fp8Tensor, float[]?)>)[(dgate, wGate, dwGate), (dup, wUp, dwUp)])
            {
                if (!dxE.IsEmpty) InputGradient(be, dOut.AsSpan(0, ci), count, inter, w, dxE, hidden);
                if (dw is not null) WeightGradient(be, dOut.AsSpan(0, ci), count, inter, xc!, dw);
            }
        }
        finally
        {
            StoragePool.Return(dh);
            StoragePool.Return(gd);
            StoragePool.Return(ud);
            StoragePool.Return(dgate);
            StoragePool.Return(dup);
            if (xc is not null) Fp8Quantizer.Return(xc);
        }
    }

    /// <summary>dIn [c, in] += dOut [c, out] (1×128) · W [out, in] (128×128), as <see cref="Fp8LinearOp.Backward"/>.</summary>
    private static void InputGradient(IBackend be, ReadOnlySpan<float> dOut, int count, int outDim, Fp8Tensor w, Span<float> dIn, int inDim)
    {
        var q = Fp8Quantizer.Rent(count, outDim, 1, 128);
        be.QuantizeE4M3(dOut, count, outDim, 1, 128, q.Codes, q.Scales, []);
        be.GemmE4M3(false, false, count, inDim, outDim, q, w, 1f, dIn, inDim);
        Fp8Quantizer.Return(q);
    }

    /// <summary>dW [out, in] += dOutᵀ · input, dOut [c, out] requantised in 128×1 tiles over the expert's rows and the
    /// input [c, in] already so (<see cref="ColumnTiles"/>).</summary>
    private static void WeightGradient(IBackend be, ReadOnlySpan<float> dOut, int count, int outDim, Fp8Tensor input, float[] dw)
    {
        var dq = Fp8Quantizer.Rent(count, outDim, 128, 1);
        be.QuantizeE4M3(dOut, count, outDim, 128, 1, dq.Codes, dq.Scales, []);
        be.GemmE4M3(true, false, outDim, input.Cols, count, dq, input, 1f, dw, input.Cols);
        Fp8Quantizer.Return(dq);
    }

    /// <summary>The cached rows (see <see cref="DecodeRows"/>) decoded and requantised in 128×1 tiles: the weight-gradient
    /// GEMM reduces over tokens, so the 1×128 scales of the cache do not carry over (a pooled [c, cols] transient).</summary>
    private static Fp8Tensor ColumnTiles(IBackend be, Fp8Tensor cache, int first, int count, int[]? rows)
    {
        int cols = cache.Cols;
        float[] decoded = StoragePool.Rent(count * cols);
        DecodeRows(cache, first, count, rows, decoded.AsSpan(0, count * cols));
        var q = Fp8Quantizer.Rent(count, cols, 128, 1);
        be.QuantizeE4M3(decoded.AsSpan(0, count * cols), count, cols, 128, 1, q.Codes, q.Scales, []);
        StoragePool.Return(decoded);
        return q;
    }

    /// <summary>dst's row r = the values of q's row rows[first + r] (or row first + r when <paramref name="rows"/> is null).</summary>
    private static void DecodeRows(Fp8Tensor q, int first, int count, int[]? rows, Span<float> dst)
    {
        int cols = q.Cols;
        for (int r = 0; r < count; r++)
            Fp8Quantizer.DequantizeRowRange(q.Codes, cols, q.TileRows, q.TileCols, q.Scales, rows is null ? first + r : rows[first + r], 0, cols,
                dst.Slice(r * cols, cols));
    }

    /// <summary>The SwiGLU inputs gate and up [S, I] kept for the backward: E4M3 codes in 1×128 tiles, or fp32.</summary>
    private sealed class SwiGluCache
    {
        private float[]? _gate, _up;
        private Fp8Tensor? _gateQ, _upQ;

        public bool Fp32 => _gate is not null;

        /// <summary>Takes over the fp32 arrays when <paramref name="fp8"/> is off; otherwise keeps their E4M3 codes.</summary>
        public static SwiGluCache Keep(IBackend be, float[] gate, float[] up, int rows, int cols, bool fp8)
        {
            if (!fp8) return new SwiGluCache { _gate = gate, _up = up };
            var cache = new SwiGluCache { _gateQ = Fp8Quantizer.Rent(rows, cols, 1, 128), _upQ = Fp8Quantizer.Rent(rows, cols, 1, 128) };
            be.QuantizeE4M3(gate.AsSpan(0, rows * cols), rows, cols, 1, 128, cache._gateQ.Codes, cache._gateQ.Scales, []);
            be.QuantizeE4M3(up.AsSpan(0, rows * cols), rows, cols, 1, 128, cache._upQ.Codes, cache._upQ.Scales, []);
            return cache;
        }

        /// <summary>Rows [first, first + count) of gate and up.</summary>
        public void Read(int first, int count, int cols, Span<float> gate, Span<float> up)
        {
            if (_gate is not null)
            {
                _gate.AsSpan(first * cols, count * cols).CopyTo(gate);
                _up!.AsSpan(first * cols, count * cols).CopyTo(up);
                return;
            }
            DecodeRows(_gateQ!, first, count, null, gate);
            DecodeRows(_upQ!, first, count, null, up);
        }

        public void Return()
        {
            if (_gate is not null) StoragePool.Return(_gate);
            if (_up is not null) StoragePool.Return(_up);
            if (_gateQ is not null) Fp8Quantizer.Return(_gateQ);
            if (_upQ is not null) Fp8Quantizer.Return(_upQ);
        }
    }
}
