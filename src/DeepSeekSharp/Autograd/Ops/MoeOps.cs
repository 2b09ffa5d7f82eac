using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>Row-wise sigmoid (V3 gate scoring).</summary>
internal sealed class SigmoidOp : GradNode
{
    private SigmoidOp(Tensor x) : base(x) { }

    public static Tensor Forward(Tensor x)
    {
        var y = Tensor.Empty((int[])x.Shape.Clone());
        TensorPrimitives.Sigmoid(x.Span, y.Span);
        return OpBase.Record(y, () => new SigmoidOp(x), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        if (GradOf(Inputs[0]) is not { IsEmpty: false } dx) return;
        var ys = output.Span;
        for (int i = 0; i < ys.Length; i++) dx[i] += dy[i] * ys[i] * (1f - ys[i]);
    }
}

/// <summary>Softmax over the last dimension (V2 gate scoring).</summary>
internal sealed class SoftmaxOp : GradNode
{
    private SoftmaxOp(Tensor x) : base(x) { }

    public static Tensor Forward(Tensor x)
    {
        int d = x.Shape[^1], rows = OpBase.Rows(x);
        var y = Tensor.Empty((int[])x.Shape.Clone());
        for (int r = 0; r < rows; r++) TensorPrimitives.SoftMax(x.Span.Slice(r * d, d), y.Span.Slice(r * d, d));
        return OpBase.Record(y, () => new SoftmaxOp(x), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        if (GradOf(Inputs[0]) is not { IsEmpty: false } dx) return;
        int d = output.Shape[^1], rows = OpBase.Rows(output);
        var ys = output.Span;
        for (int r = 0; r < rows; r++)
        {
            var y = ys.Slice(r * d, d);
            var g = dy.AsSpan(r * d, d);
            float dot = TensorPrimitives.Dot(y, g);
            for (int i = 0; i < d; i++) dx[r * d + i] += y[i] * (g[i] - dot);
        }
    }
}

/// <summary>
/// Routing weights of the chosen experts: w[t, j] = s[t, idx[t, j]], optionally divided by (Σ_j w + 1e-20),
/// times <c>routed_scaling_factor</c> (model.md, DeepSeekMoE). Selection is not differentiable; the weights are.
/// </summary>
internal sealed class RouteWeightsOp : GradNode
{
    private readonly int[] _idx;
    private readonly int _k;
    private readonly bool _normalize;
    private readonly float _scale;

    private RouteWeightsOp(Tensor scores, int[] idx, int k, bool normalize, float scale) : base(scores)
    {
        (_idx, _k, _normalize, _scale) = (idx, k, normalize, scale);
    }

    public static Tensor Forward(Tensor scores, int[] idx, int k, bool normalize, float scale)
    {
        int e = scores.Shape[^1], n = OpBase.Rows(scores);
        var w = Tensor.Empty(n, k);
        var s = scores.Span; var ws = w.Span;
        for (int t = 0; t < n; t++)
        {
            float sum = 0;
            for (int j = 0; j < k; j++) { ws[t * k + j] = s[t * e + idx[t * k + j]]; sum += ws[t * k + j]; }
            float f = _Factor(normalize, sum, scale);
            for (int j = 0; j < k; j++) ws[t * k + j] *= f;
        }
        return OpBase.Record(w, () => new RouteWeightsOp(scores, idx, k, normalize, scale), scores);
    }

    private static float _Factor(bool normalize, float sum, float scale) => normalize ? scale / (sum + 1e-20f) : scale;

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor scores = Inputs[0];
        if (GradOf(scores) is not { IsEmpty: false } ds) return;
        int e = scores.Shape[^1], n = OpBase.Rows(scores), k = _k;
        var s = scores.Span;
        for (int t = 0; t < n; t++)
        {
            if (!_normalize)
            {
                for (int j = 0; j < k; j++) ds[t * e + _idx[t * k + j]] += _scale * dy[t * k + j];
                continue;
            }
            float sum = 1e-20f, dot = 0;
            for (int j = 0; j < k; j++) { float r = s[t * e + _idx[t * k + j]]; sum += r; dot += dy[t * k + j] * r; }
            // w_j = c·r_j/S  ⇒  ∂L/∂r_m = c·(dy_m/S − Σ_j dy_j r_j / S²)
            for (int j = 0; j < k; j++)
                ds[t * e + _idx[t * k + j]] += _scale * (dy[t * k + j] / sum - dot / (sum * sum));
        }
    }
}

/// <summary>
/// Combines routed expert outputs: y[t] = Σ_j w[t, j] · E_j(x_t). The expert outputs arrive stacked in one tensor
/// [S, H] (grouped by expert, as <see cref="RoutedExpertsOp"/> returns them); stacked row r belongs to token
/// <c>rowToken[r]</c> and is that token's choice number <c>rowSlot[r]</c> (0 ≤ slot &lt; k).
/// <para>
/// The backward reads the expert outputs for the routing weights' gradient (dw[t, j] = E_j(x_t) · dy[t]) and nothing
/// else of them. With <c>bf16Cache</c> it keeps them as a BF16 copy (round to nearest even; DeepSeek-V3 keeps the
/// combine's inputs in BF16) and copies of the [N, k] weights, so the fp32 outputs [S, H] can go after the forward; the
/// forward sums the fp32 values either way, and the gradient of the outputs (w · dy) does not depend on them.
/// </para>
/// </summary>
internal sealed class MoeCombineOp : GradNode
{
    private readonly int[] _rowToken, _rowSlot;
    private byte[]? _stackedBf16;                          // [S, H] BF16 bits, or null: the backward reads the inputs
    private float[]? _weights;                             // [N, k] copy, kept with the BF16 outputs

    public override bool ReadsOutput => false;

    private MoeCombineOp(Tensor weights, Tensor stacked, int[] rowToken, int[] rowSlot, byte[]? stackedBf16, float[]? weightCopy)
        : base(stackedBf16 is null, weights, stacked)
    {
        (_rowToken, _rowSlot, _stackedBf16, _weights) = (rowToken, rowSlot, stackedBf16, weightCopy);
    }

    public static Tensor Forward(Tensor weights, Tensor stacked, int[] rowToken, int[] rowSlot, bool bf16Cache = false)
    {
        int n = weights.Shape[0], k = weights.Shape[1], hidden = stacked.Shape[^1], rows = OpBase.Rows(stacked);
        if (rowToken.Length != rows || rowSlot.Length != rows)
            throw new ArgumentException($"moe combine: {rows} stacked rows but {rowToken.Length} tokens and {rowSlot.Length} slots");
        var y = Tensor.Zeros(n, hidden);
        var ys = y.Span; var ws = weights.Span; var o = stacked.Span;
        for (int r = 0; r < rows; r++)
        {
            int t = rowToken[r];
            if ((uint)t >= (uint)n || (uint)rowSlot[r] >= (uint)k) throw new ArgumentOutOfRangeException(nameof(rowToken), $"row {r}: token {t}, slot {rowSlot[r]}");
            var target = ys.Slice(t * hidden, hidden);
            TensorPrimitives.MultiplyAdd(o.Slice(r * hidden, hidden), ws[t * k + rowSlot[r]], target, target);
        }
        if (!OpBase.WillRecord(weights, stacked)) return y;
        byte[]? bf16 = null;
        float[]? weightCopy = null;
        if (bf16Cache)
        {
            bf16 = StoragePool.RentBytes(2 * rows * hidden);
            NumericFormats.FloatToBf16(o[..(rows * hidden)], System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bf16.AsSpan(0, 2 * rows * hidden)));
            weightCopy = StoragePool.Rent(n * k);
            ws[..(n * k)].CopyTo(weightCopy);
        }
        return OpBase.Record(y, () => new MoeCombineOp(weights, stacked, rowToken, rowSlot, bf16, weightCopy), weights, stacked);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor weights = Inputs[0], stacked = Inputs[1];
        int hidden = output.Shape[1], k = weights.Shape[1], rows = _rowToken.Length;
        // Every stacked row is one (token, slot) pair, so its gradient is written exactly once.
        Span<float> dw = GradOf(weights), dOut = GradForWrite(stacked, out bool overwrite);
        ReadOnlySpan<float> ws = _weights is null ? weights.Span : _weights.AsSpan(0, weights.Shape[0] * k);
        var bf16 = _stackedBf16 is null ? default : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(_stackedBf16.AsSpan(0, 2 * rows * hidden));
        float[]? row = _stackedBf16 is null || dw.IsEmpty ? null : StoragePool.Rent(hidden);
        try
        {
            for (int r = 0; r < rows; r++)
            {
                int t = _rowToken[r], slot = t * k + _rowSlot[r];
                var g = dy.AsSpan(t * hidden, hidden);
                if (!dw.IsEmpty)
                {
                    ReadOnlySpan<float> o;
                    if (row is null) o = stacked.Span.Slice(r * hidden, hidden);
                    else
                    {
                        NumericFormats.Bf16ToFloat(bf16.Slice(r * hidden, hidden), row.AsSpan(0, hidden));
                        o = row.AsSpan(0, hidden);
                    }
                    dw[slot] += TensorPrimitives.Dot(o, g);
                }
                if (dOut.IsEmpty) continue;
                var dRow = dOut.Slice(r * hidden, hidden);
                if (overwrite) TensorPrimitives.Multiply(g, ws[slot], dRow);
                else TensorPrimitives.MultiplyAdd(g, ws[slot], dRow, dRow);
            }
        }
        finally
        {
            if (row is not null) StoragePool.Return(row);
            if (_stackedBf16 is not null) StoragePool.ReturnBytes(_stackedBf16);
            if (_weights is not null) StoragePool.Return(_weights);
            (_stackedBf16, _weights) = (null, null);
        }
    }
}

/// <summary>
/// All routed experts of an MoE layer in one op: expert e runs on the rows <c>rows[offsets[e]..offsets[e+1])</c> of
/// x (tokens grouped by expert), and the outputs come back stacked in the same order, [S, H]. The experts run
/// concurrently (<see cref="Kernels.IBackend.RunConcurrently"/>), each whole on one worker, largest first: on a few
/// cores that beats splitting every small expert GEMM over all of them. Each expert is an ordinary module call, so its
/// Linears may be FP8, BF16 or adapted (LoRA); its ops are recorded as a sub-graph of their own, and the backward runs
/// the experts' sub-graphs concurrently too, then scatter-adds their input gradients into x. The op is recorded when
/// anything below it needs a gradient (x, or any expert parameter; frozen experts just record nothing).
/// </summary>
internal sealed class RoutedExpertsOp : GradNode
{
    private readonly Branch[] _branches;
    private readonly int[] _rows;
    private readonly int _hidden;

    private RoutedExpertsOp(Tensor x, Branch[] branches, int[] rows, int hidden) : base(false, x)
    {
        (_branches, _rows, _hidden) = (branches, rows, hidden);
    }

    public override bool ReadsOutput => false;

    /// <summary>One expert's slice: its rows start at <see cref="Offset"/>; Input/Output are its sub-graph's ends.</summary>
    private sealed class Branch(int expert, int offset, int count)
    {
        public int Expert { get; } = expert;
        public int Offset { get; } = offset;
        public int Count { get; } = count;
        public Tensor? Input { get; set; }
        public Tensor? Output { get; set; }
    }

    /// <param name="x">[N, H]</param>
    /// <param name="rows">token index of every stacked row, grouped by expert</param>
    /// <param name="offsets">[E + 1]: expert e owns stacked rows offsets[e]..offsets[e+1]</param>
    /// <param name="expert">runs expert e on its gathered rows [n_e, H] and returns [n_e, H]</param>
    /// <returns>[S, H] with S = rows.Length</returns>
    public static Tensor Forward(Tensor x, int[] rows, int[] offsets, Func<int, Tensor, Tensor> expert)
    {
        int hidden = x.Shape[^1], n = OpBase.Rows(x);
        var branches = Array.ConvertAll(ExpertRows.ActiveExperts(rows, offsets, n, "routed experts"),
            e => new Branch(e, offsets[e], offsets[e + 1] - offsets[e]));
        // Largest first, so the last pieces to finish are small ones and the workers end together.
        Array.Sort(branches, (a, b) => b.Count.CompareTo(a.Count));
        var stacked = Tensor.Empty(rows.Length, hidden);
        bool gradEnabled = GradMode.IsEnabled, inputNeedsGrad = gradEnabled && x.RequiresGrad;
        x.Backend.RunConcurrently(branches.Length, i =>
        {
            // Grad mode is per thread: a worker follows the caller's.
            using var noGrad = gradEnabled ? null : GradMode.NoGrad();
            var b = branches[i];
            var xs = x.Span; var ss = stacked.Span;
            var input = Tensor.Empty(b.Count, hidden);
            var inputSpan = input.Span;
            for (int r = 0; r < b.Count; r++) xs.Slice(rows[b.Offset + r] * hidden, hidden).CopyTo(inputSpan.Slice(r * hidden, hidden));
            input.RequiresGrad = inputNeedsGrad;
            Tensor output = expert(b.Expert, input);
            OpBase.CheckLastDim(output, hidden, "routed expert output");
            output.Span.CopyTo(ss.Slice(b.Offset * hidden, b.Count * hidden));
            input.ReleaseIfUnread();
            output.ReleaseIfUnread();
            if (output.GradFn is null) return;
            b.Input = input;
            b.Output = output;
        });
        if (!gradEnabled || Array.TrueForAll(branches, b => b.Output is null)) return stacked;
        stacked.GradFn = new RoutedExpertsOp(x, Array.FindAll(branches, b => b.Output is not null), rows, hidden);
        stacked.RequiresGrad = true;
        return stacked;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        int hidden = _hidden;
        Inputs[0].Backend.RunConcurrently(_branches.Length, i =>
        {
            var b = _branches[i];
            float[] seed = StoragePool.Rent(b.Count * hidden);
            dy.AsSpan(b.Offset * hidden, b.Count * hidden).CopyTo(seed);
            Backprop.BackwardFrom(b.Output!, seed);
            b.Output = null;
        });
        // Tokens appear in up to k experts, so their input gradients are summed here, one expert after another, in
        // expert order (not the largest-first order of the work): the grouped ops sum in that order too, so both paths
        // give the same bits.
        Span<float> dx = GradOf(Inputs[0]);
        Array.Sort(_branches, (a, b) => a.Expert.CompareTo(b.Expert));
        foreach (var b in _branches)
        {
            float[]? g = b.Input!.Grad;
            b.Input.DropStorage(); // the expert's private input: nobody else holds it
            b.Input = null;
            if (g is null) continue;
            if (!dx.IsEmpty) ExpertRows.ScatterAdd(dx, g, _rows, b.Offset, b.Count, hidden);
            StoragePool.Return(g);
        }
    }
}

/// <summary>
/// Token slots grouped by expert: stacked row r holds token <see cref="Token"/>[r]'s slot <see cref="Slot"/>[r] (its
/// j-th choice); expert e owns rows Offsets[e]..Offsets[e+1].
/// </summary>
internal readonly record struct RoutedRows(int[] Token, int[] Slot, int[] Offsets)
{
    /// <summary>A counting sort of the chosen experts <paramref name="idx"/> [N·k]: tokens stay in order within an expert.</summary>
    public static RoutedRows Group(int[] idx, int k, int experts)
    {
        int n = idx.Length / k;
        var offsets = new int[experts + 1];
        foreach (int e in idx) offsets[e + 1]++;
        for (int e = 0; e < experts; e++) offsets[e + 1] += offsets[e];
        var token = new int[n * k];
        var slot = new int[n * k];
        var fill = (int[])offsets.Clone();
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++)
            {
                int r = fill[idx[t * k + j]]++;
                token[r] = t;
                slot[r] = j;
            }
        return new RoutedRows(token, slot, offsets);
    }
}

/// <summary>What both routed-expert ops (<see cref="RoutedExpertsOp"/>, <see cref="GroupedExpertsOp"/>) do with the
/// token rows grouped by expert.</summary>
internal static class ExpertRows
{
    /// <summary>
    /// Checks that <paramref name="offsets"/> run from 0 to rows.Length without decreasing and that every row is a
    /// token of x [n, H]; returns the experts that got rows, in expert order.
    /// </summary>
    public static int[] ActiveExperts(int[] rows, int[] offsets, int n, string what)
    {
        if (offsets.Length < 1 || offsets[0] != 0 || offsets[^1] != rows.Length)
            throw new ArgumentException($"{what}: offsets must run from 0 to {rows.Length}");
        foreach (int r in rows)
            if ((uint)r >= (uint)n) throw new ArgumentOutOfRangeException(nameof(rows), $"row {r} outside [0, {n})");
        var active = new List<int>(offsets.Length - 1);
        for (int e = 0; e + 1 < offsets.Length; e++)
        {
            int count = offsets[e + 1] - offsets[e];
            if (count < 0) throw new ArgumentException($"{what}: offsets decrease at expert {e}");
            if (count > 0) active.Add(e);
        }
        return active.ToArray();
    }

    /// <summary>dx[rows[first + r]] += stacked[r] for r &lt; count: a token routed to k experts sums k input gradients.</summary>
    public static void ScatterAdd(Span<float> dx, ReadOnlySpan<float> stacked, int[] rows, int first, int count, int hidden)
    {
        for (int r = 0; r < count; r++)
        {
            var target = dx.Slice(rows[first + r] * hidden, hidden);
            TensorPrimitives.Add(target, stacked.Slice(r * hidden, hidden), target);
        }
    }
}
