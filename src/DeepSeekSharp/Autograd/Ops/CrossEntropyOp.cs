using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>Mean softmax cross-entropy over rows whose target is ≥ 0 (−1 = ignore). Output is a scalar [1].</summary>
internal sealed class CrossEntropyOp : GradNode
{
    private readonly int[] _targets;
    private readonly float[] _lse;
    private readonly int _count;

    private CrossEntropyOp(Tensor logits, int[] targets, float[] lse, int count) : base(logits)
    {
        (_targets, _lse, _count) = (targets, lse, count);
    }

    public static Tensor Forward(Tensor logits, int[] targets)
    {
        int v = logits.Shape[^1], rows = OpBase.Rows(logits);
        if (targets.Length != rows) throw new ArgumentException($"cross entropy: {targets.Length} targets for {rows} rows");
        int count = 0;
        foreach (int t in targets)
        {
            if (t >= v) throw new DeepSeekSharpException($"target id {t} is outside the vocabulary [0, {v})");
            if (t >= 0) count++;
        }
        var lse = new float[rows];
        double sum = logits.Backend.CrossEntropyForward(logits.Span, targets, v, lse);
        var y = Tensor.FromArray([count == 0 ? 0f : (float)(sum / count)], 1);
        return OpBase.Record(y, () => new CrossEntropyOp(logits, targets, lse, count), logits);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor logits = Inputs[0];
        if (_count == 0 || GradOf(logits) is not { } dl) return;
        logits.Backend.CrossEntropyBackward(logits.Span, _targets, logits.Shape[^1], _lse, dy[0] / _count, dl);
    }
}

/// <summary>
/// Mean softmax cross-entropy of logits = h · Wᵀ without materialising the [rows, V] logits: rows are processed in
/// blocks of a few MB, and since d(loss)/d(logits) = (softmax − onehot)/count is known as soon as a block's
/// log-sum-exp is, the block's contributions to dh [rows, H] and dW [V, H] are formed right away and kept (both far
/// smaller than the logits); the backward only scales them by the upstream gradient. Same result as
/// <c>CrossEntropy(Linear(h, W))</c> to fp32 rounding.
/// </summary>
internal sealed class LinearCrossEntropyOp : GradNode
{
    private readonly float[]? _dh;
    private readonly float[]? _dw;

    private LinearCrossEntropyOp(Tensor h, Tensor w, float[]? dh, float[]? dw) : base(h, w) { (_dh, _dw) = (dh, dw); }

    /// <summary>Rows per block: about 2 M logits (8 MB), at least 64 rows.</summary>
    internal static int BlockRows(int vocab) => Math.Max(64, (1 << 21) / Math.Max(1, vocab));

    public static Tensor Forward(Tensor h, Tensor w, int[] targets)
    {
        int hidden = w.Shape[1], v = w.Shape[0];
        OpBase.CheckLastDim(h, hidden, "linear cross-entropy input");
        int rows = OpBase.Rows(h);
        if (targets.Length != rows) throw new ArgumentException($"cross entropy: {targets.Length} targets for {rows} rows");
        int count = 0;
        foreach (int t in targets)
        {
            if (t >= v) throw new DeepSeekSharpException($"target id {t} is outside the vocabulary [0, {v})");
            if (t >= 0) count++;
        }
        bool record = GradMode.IsEnabled && (h.RequiresGrad || w.RequiresGrad) && count > 0;
        float[]? dh = record && h.RequiresGrad ? new float[rows * hidden] : null;
        float[]? dw = record && w.RequiresGrad ? new float[v * hidden] : null;
        var be = h.Backend;
        int block = Math.Min(rows, BlockRows(v));
        var pool = System.Buffers.ArrayPool<float>.Shared;
        float[] logits = pool.Rent(block * v), dlogits = record ? pool.Rent(block * v) : [], lse = pool.Rent(block);
        double sum = 0;
        try
        {
            for (int r0 = 0; r0 < rows; r0 += block)
            {
                int n = Math.Min(block, rows - r0);
                var hBlock = h.Span.Slice(r0 * hidden, n * hidden);
                var tBlock = targets.AsSpan(r0, n);
                var lBlock = logits.AsSpan(0, n * v);
                be.Gemm(false, true, n, v, hidden, 1f, hBlock, hidden, w.Span, hidden, 0f, lBlock, v);
                sum += be.CrossEntropyForward(lBlock, tBlock, v, lse.AsSpan(0, n));
                if (!record) continue;
                var dBlock = dlogits.AsSpan(0, n * v);
                dBlock.Clear();
                be.CrossEntropyBackward(lBlock, tBlock, v, lse.AsSpan(0, n), 1f / count, dBlock);
                if (dh is not null) be.Gemm(false, false, n, hidden, v, 1f, dBlock, v, w.Span, hidden, 0f, dh.AsSpan(r0 * hidden, n * hidden), hidden);
                if (dw is not null) be.Gemm(true, false, v, hidden, n, 1f, dBlock, v, hBlock, hidden, 1f, dw, hidden);
            }
        }
        finally
        {
            pool.Return(logits);
            if (record) pool.Return(dlogits);
            pool.Return(lse);
        }
        var y = Tensor.FromArray([count == 0 ? 0f : (float)(sum / count)], 1);
        return record ? OpBase.Record(y, () => new LinearCrossEntropyOp(h, w, dh, dw), h, w) : y;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor h = Inputs[0], w = Inputs[1];
        if (_dh is not null && GradOf(h) is { } gh) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(_dh, dy[0], gh, gh);
        if (_dw is not null && GradOf(w) is { } gw) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(_dw, dy[0], gw, gw);
    }
}
