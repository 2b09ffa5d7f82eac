using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>y[N, out] = x[N, in] · W[out, in]ᵀ (HF layout). Backward: dx = dy·W, dW += dyᵀ·x.</summary>
internal sealed class LinearOp : GradNode
{
    private static long s_recomputations;

    private LinearOp(Tensor x, Tensor w) : base(x, w) { }

    /// <summary>How many Linear outputs (fp32 or FP8) were recomputed so far (tests check recomputation really happens).</summary>
    internal static long Recomputations => Interlocked.Read(ref s_recomputations);

    internal static void CountRecomputation() => Interlocked.Increment(ref s_recomputations);

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, Tensor w)
    {
        int inDim = w.Shape[1], outDim = w.Shape[0];
        OpBase.CheckLastDim(x, inDim, "linear input");
        int n = OpBase.Rows(x);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = outDim;
        var y = Tensor.Empty(shape);
        x.Backend.Gemm(false, true, n, outDim, inDim, 1f, x.Span, inDim, w.Span, inDim, 0f, y.Span, outDim);
        return OpBase.Record(y, () => new LinearOp(x, w), x, w);
    }

    internal override bool CanRecomputeOutput => Inputs[0].CanBeRead && Inputs[1].CanBeRead;

    /// <summary>The same GEMM call on the same inputs.</summary>
    internal override float[] RecomputeOutput(Tensor output)
    {
        CountRecomputation();
        Tensor x = Inputs[0], w = Inputs[1];
        int inDim = w.Shape[1], outDim = w.Shape[0], n = OpBase.Rows(x);
        float[] y = StoragePool.Rent(n * outDim);
        x.Backend.Gemm(false, true, n, outDim, inDim, 1f, x.Span, inDim, w.Span, inDim, 0f, y.AsSpan(0, n * outDim), outDim);
        return y;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0], w = Inputs[1];
        int inDim = w.Shape[1], outDim = w.Shape[0], n = OpBase.Rows(x);
        var be = x.Backend;
        if (GradForWrite(x, out bool overwrite) is { IsEmpty: false } dx)
            be.Gemm(false, false, n, inDim, outDim, 1f, dy, outDim, w.Span, inDim, overwrite ? 0f : 1f, dx, inDim);
        if (GradOf(w) is { IsEmpty: false } dw) be.Gemm(true, false, outDim, inDim, n, 1f, dy, outDim, x.Span, inDim, 1f, dw, inDim);
    }
}
