using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// Softmax cross-entropy summed over rows whose target is ≥ 0 (−1 = ignore), divided by their count or by a given
/// divisor (the trained tokens of a whole global batch, so micro-batches add up to its mean). Output is a scalar [1].
/// </summary>
internal sealed class CrossEntropyOp : GradNode
{
    private readonly int[] _targets;
    private readonly float[] _lse;
    private readonly int _count;

    private CrossEntropyOp(Tensor logits, int[] targets, float[] lse, int count) : base(logits)
    {
        (_targets, _lse, _count) = (targets, lse, count);
    }

    public static Tensor Forward(Tensor logits, int[] targets, long? divisor = null)
    {
        int v = logits.Shape[^1], rows = OpBase.Rows(logits);
        int count = OpBase.Divisor(OpBase.CountTargets(targets, rows, v), divisor);
        var lse = new float[rows];
        double sum = logits.Backend.CrossEntropyForward(logits.Span, targets, v, lse);
        var y = Tensor.FromArray([count == 0 ? 0f : (float)(sum / count)], 1);
        return OpBase.Record(y, () => new CrossEntropyOp(logits, targets, lse, count), logits);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor logits = Inputs[0];
        if (_count == 0 || GradOf(logits) is not { IsEmpty: false } dl) return;
        logits.Backend.CrossEntropyBackward(logits.Span, _targets, logits.Shape[^1], _lse, dy[0] / _count, dl);
    }
}

/// <summary>
/// Mean softmax cross-entropy of logits = h · Wᵀ without materialising the [rows, V] logits: rows are processed in
/// blocks of about 8 MB of logits. The gradient d(loss)/d(logits) = (softmax − onehot)/count of a block is known as
/// soon as its log-sum-exp is, so when dW [V, H] is no larger than the logits it replaces (H ≤ rows) the forward
/// turns each block into its share of dh [rows, H] and dW right away and the backward only scales them; otherwise
/// (large hidden sizes, e.g. DeepSeek-V3's 7,168 with a few thousand rows) the forward keeps only the per-row
/// log-sum-exp and the backward recomputes each block's logits (one more GEMM, memory O(block · V)). Same result as
/// <c>CrossEntropy(Linear(h, W))</c> to fp32 rounding.
/// </summary>
internal sealed class LinearCrossEntropyOp : GradNode
{
    private readonly int[] _targets;
    private readonly int _count;
    private readonly float[]? _lse;
    private readonly float[]? _dh;
    private readonly float[]? _dw;

    private LinearCrossEntropyOp(Tensor h, Tensor w, int[] targets, int count, float[]? lse, float[]? dh, float[]? dw) : base(h, w)
    {
        (_targets, _count, _lse, _dh, _dw) = (targets, count, lse, dh, dw);
    }

    /// <summary>Rows per block: about 2 M logits (8 MB), at least 64 rows.</summary>
    internal static int BlockRows(int vocab) => Math.Max(64, (1 << 21) / Math.Max(1, vocab));

    /// <summary>Whether the gradients are formed in the forward (dW no larger than the logits) or recomputed in the backward.</summary>
    internal static bool FormsGradientsInForward(int rows, int hidden) => hidden <= rows;

    public static Tensor Forward(Tensor h, Tensor w, int[] targets, long? divisor = null)
    {
        int hidden = w.Shape[1], v = w.Shape[0];
        OpBase.CheckLastDim(h, hidden, "linear cross-entropy input");
        int rows = OpBase.Rows(h);
        int count = OpBase.Divisor(OpBase.CountTargets(targets, rows, v), divisor);
        bool record = count > 0 && OpBase.WillRecord(h, w);
        bool eager = record && FormsGradientsInForward(rows, hidden);
        float[]? dh = eager && h.RequiresGrad ? StoragePool.RentZeroed(rows * hidden) : null;
        float[]? dw = eager && w.RequiresGrad ? StoragePool.RentZeroed(v * hidden) : null;
        float[]? keptLse = record && !eager ? new float[rows] : null;
        double sum = Blocks(h, w, targets, count, keptLse, eager ? 1f / count : 0f, dh, dw);
        var y = Tensor.FromArray([count == 0 ? 0f : (float)(sum / count)], 1);
        return record ? OpBase.Record(y, () => new LinearCrossEntropyOp(h, w, targets, count, keptLse, dh, dw), h, w) : y;
    }

    /// <summary>
    /// One sweep over row blocks: logits = h·Wᵀ per block; with <paramref name="gradScale"/> = 0 the block's
    /// log-sum-exp is computed (and stored in <paramref name="lse"/> if given) and its loss summed; otherwise
    /// dlogits = gradScale · (softmax − onehot) (from <paramref name="lse"/> when given, else from the block's own)
    /// is accumulated into dh (rows of the block) and dW.
    /// </summary>
    private static double Blocks(Tensor h, Tensor w, int[] targets, int count, float[]? lse, float gradScale, float[]? dh, float[]? dw)
    {
        int hidden = w.Shape[1], v = w.Shape[0], rows = OpBase.Rows(h);
        var be = h.Backend;
        int block = Math.Min(rows, BlockRows(v));
        bool grads = gradScale != 0f && (dh is not null || dw is not null);
        float[] logits = StoragePool.Rent(block * v), dlogits = grads ? StoragePool.Rent(block * v) : [], blockLse = StoragePool.Rent(block);
        double sum = 0;
        // Several blocks share W: pack it once per layout instead of once per block and product (the packing of an
        // 8 MB head weight per 256-row block was ~1/4 of the head's GEMM time).
        bool shared = rows > block;
        using PackedMatrix? wT = shared ? be.PackGemmB(true, w.Span, hidden, v, hidden) : null;
        using PackedMatrix? wN = shared && grads && dh is not null ? be.PackGemmB(false, w.Span, hidden, hidden, v) : null;
        try
        {
            for (int r0 = 0; r0 < rows; r0 += block)
            {
                int n = Math.Min(block, rows - r0);
                var hBlock = h.Span.Slice(r0 * hidden, n * hidden);
                var tBlock = targets.AsSpan(r0, n);
                var lBlock = logits.AsSpan(0, n * v);
                var lseBlock = blockLse.AsSpan(0, n);
                if (wT is not null) be.GemmPackedB(false, n, 1f, hBlock, hidden, wT, 0f, lBlock, v);
                else be.Gemm(false, true, n, v, hidden, 1f, hBlock, hidden, w.Span, hidden, 0f, lBlock, v);
                var dBlock = grads ? dlogits.AsSpan(0, n * v) : [];
                if (lse is not null && grads)
                {
                    lse.AsSpan(r0, n).CopyTo(lseBlock);
                    dBlock.Clear();
                    be.CrossEntropyBackward(lBlock, tBlock, v, lseBlock, gradScale, dBlock);
                }
                else if (grads)
                {
                    // Gradients formed right away: one sweep gives the loss and dlogits (one exp per logit, not two).
                    sum += be.CrossEntropyForwardBackward(lBlock, tBlock, v, lseBlock, gradScale, dBlock);
                }
                else
                {
                    sum += be.CrossEntropyForward(lBlock, tBlock, v, lseBlock);
                    if (lse is not null) lseBlock.CopyTo(lse.AsSpan(r0, n));
                }
                if (!grads) continue;
                if (dh is not null && wN is not null) be.GemmPackedB(false, n, 1f, dBlock, v, wN, 1f, dh.AsSpan(r0 * hidden, n * hidden), hidden);
                else if (dh is not null) be.Gemm(false, false, n, hidden, v, 1f, dBlock, v, w.Span, hidden, 1f, dh.AsSpan(r0 * hidden, n * hidden), hidden);
                if (dw is not null) be.Gemm(true, false, v, hidden, n, 1f, dBlock, v, hBlock, hidden, 1f, dw, hidden);
            }
        }
        finally
        {
            StoragePool.Return(logits);
            if (grads) StoragePool.Return(dlogits);
            StoragePool.Return(blockLse);
        }
        return sum;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor h = Inputs[0], w = Inputs[1];
        if (_lse is not null)
        {
            // Recompute each block's logits and accumulate straight into the gradients.
            Blocks(h, w, _targets, _count, _lse, dy[0] / _count, GradArrayOf(h), GradArrayOf(w));
            return;
        }
        AddPrecomputedGradient(h, _dh, dy[0]);
        AddPrecomputedGradient(w, _dw, dy[0]);
    }
}
