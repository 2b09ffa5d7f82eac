using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// y[N, out] = x[N, in] · Wᵀ with W [out, in] a frozen weight kept as stored (BF16 bits, or E4M3 codes with 128×128
/// scales). Backward: dx = dy·W only; a frozen weight has no gradient, so the weight-gradient GEMM (a third of a
/// Linear's training FLOPs) is never run. W is widened to fp32 a strip at a time inside each GEMM, never as a whole.
/// </summary>
internal sealed class CompressedLinearOp : GradNode
{
    // Rows of W widened at once in the backward: a whole number of FP8 blocks, deep enough (k = 512) for an efficient
    // GEMM, small beside the weight (512 × in floats).
    private const int StripRows = 512;

    private readonly CompressedWeight _weight;

    // The backward reads no input values: dx needs only dy and the weight the op holds.
    private CompressedLinearOp(Tensor x, CompressedWeight weight) : base(false, x) => _weight = weight;

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, CompressedWeight w)
    {
        OpBase.CheckLastDim(x, w.Cols, "linear input");
        int n = OpBase.Rows(x);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = w.Rows;
        var y = Tensor.Empty(shape);
        x.Backend.GemmCompressedWeight(n, x.Span, w, y.Span);
        return OpBase.Record(y, () => new CompressedLinearOp(x, w), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0];
        if (GradForWrite(x, out bool overwrite) is not { IsEmpty: false } dx) return;
        int inDim = _weight.Cols, outDim = _weight.Rows, n = OpBase.Rows(x);
        int strip = Math.Min(StripRows, outDim);
        float[] wide = StoragePool.Rent(strip * inDim);
        try
        {
            // dx = Σ over strips of W's rows: dy[:, strip] · W[strip, :] (the first strip overwrites when asked to).
            for (int r0 = 0; r0 < outDim; r0 += strip)
            {
                int rows = Math.Min(strip, outDim - r0);
                for (int r = 0; r < rows; r++) _weight.DecodeRow(r0 + r, 0, wide.AsSpan(r * inDim, inDim));
                float beta = r0 == 0 && overwrite ? 0f : 1f;
                x.Backend.Gemm(false, false, n, inDim, rows, 1f, dy.AsSpan(r0), outDim, wide, inDim, beta, dx, inDim);
            }
        }
        finally { StoragePool.Return(wide); }
    }
}
