using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>RMSNorm over the last dimension; saves 1/rms per row for the backward.</summary>
internal sealed class RmsNormOp : GradNode
{
    private readonly float[] _invRms;
    private readonly float _eps;
    private static long s_recomputations;

    /// <summary>How many norm outputs were recomputed so far (tests check recomputation really happens).</summary>
    internal static long Recomputations => Interlocked.Read(ref s_recomputations);

    private RmsNormOp(Tensor x, Tensor w, float[] invRms, float eps) : base(x, w) { (_invRms, _eps) = (invRms, eps); }

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, Tensor w, float eps)
    {
        int d = w.Shape[0];
        OpBase.CheckLastDim(x, d, "rms_norm input");
        var y = Tensor.Empty((int[])x.Shape.Clone());
        var inv = new float[OpBase.Rows(x)];
        x.Backend.RmsNormForward(x.Span, w.Span, eps, d, y.Span, inv);
        return OpBase.Record(y, () => new RmsNormOp(x, w, inv, eps), x, w);
    }

    /// <summary>The input is kept for this op's own backward, so the output can always be rebuilt (same kernel, same inputs).</summary>
    internal override bool CanRecomputeOutput => Inputs[0].CanBeRead;

    internal override float[] RecomputeOutput(Tensor output)
    {
        Interlocked.Increment(ref s_recomputations);
        Tensor x = Inputs[0], w = Inputs[1];
        int d = w.Shape[0], rows = OpBase.Rows(x);
        float[] y = StoragePool.Rent(checked((int)x.Length));
        float[] inv = System.Buffers.ArrayPool<float>.Shared.Rent(rows);
        x.Backend.RmsNormForward(x.Span, w.Span, _eps, d, y.AsSpan(0, (int)x.Length), inv.AsSpan(0, rows));
        System.Buffers.ArrayPool<float>.Shared.Return(inv);
        return y;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0], w = Inputs[1];
        int d = w.Shape[0];
        x.Backend.RmsNormBackward(x.Span, w.Span, _invRms, dy.AsSpan(0, (int)x.Length), d,
            GradOf(x), GradOf(w));
    }
}
