using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// Interleaved rotary embedding on dims [offset, offset+ropeDim) of each of <c>groups</c> groups of width
/// <c>stride</c> in the last dimension (q: one group per head; k_pe: one group). Backward is the inverse rotation.
/// </summary>
internal sealed class RopeOp : GradNode
{
    private readonly int _groups, _stride, _offset, _ropeDim;
    private readonly int[] _positions;
    private readonly float[] _cos, _sin;

    private RopeOp(Tensor x, int groups, int stride, int offset, int ropeDim, int[] positions, float[] cos, float[] sin) : base(false, x)
    {
        (_groups, _stride, _offset, _ropeDim, _positions, _cos, _sin) = (groups, stride, offset, ropeDim, positions, cos, sin);
    }

    public static Tensor Forward(Tensor x, int groups, int stride, int offset, int ropeDim, int[] positions, float[] cos, float[] sin)
    {
        OpBase.CheckLastDim(x, groups * stride, "rope input");
        int rows = OpBase.Rows(x);
        if (positions.Length != rows) throw new ArgumentException($"rope: {positions.Length} positions for {rows} rows");
        var y = Tensor.Empty((int[])x.Shape.Clone());
        x.Backend.Rope(x.Span, y.Span, rows, groups, stride, offset, ropeDim, positions, cos, sin, inverse: false);
        // A rotation keeps no input, so it is recomputable exactly when its input is: it inherits the input's policy.
        y.RecomputeWhenReleased = x.RecomputeWhenReleased;
        return OpBase.Record(y, () => new RopeOp(x, groups, stride, offset, ropeDim, positions, cos, sin), x);
    }

    public override bool ReadsOutput => false;

    /// <summary>RoPE keeps no input for its backward, so its output is rebuilt only from an input that is itself recomputable.</summary>
    internal override bool CanRecomputeOutput => Inputs[0].CanBeRead;

    internal override float[] RecomputeOutput(Tensor output)
    {
        Tensor x = Inputs[0];
        int n = (int)x.Length, rows = OpBase.Rows(x);
        float[] y = StoragePool.Rent(n);
        x.Backend.Rope(x.Span, y.AsSpan(0, n), rows, _groups, _stride, _offset, _ropeDim, _positions, _cos, _sin, inverse: false);
        return y;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0];
        if (GradForWrite(x, out bool overwrite) is not { IsEmpty: false } dx) return;
        int rows = OpBase.Rows(x);
        int n = (int)x.Length;
        if (overwrite)
        {
            x.Backend.Rope(dy.AsSpan(0, n), dx, rows, _groups, _stride, _offset, _ropeDim, _positions, _cos, _sin, inverse: true);
            return;
        }
        float[] rotated = System.Buffers.ArrayPool<float>.Shared.Rent(n);
        try
        {
            x.Backend.Rope(dy.AsSpan(0, n), rotated.AsSpan(0, n), rows, _groups, _stride, _offset, _ropeDim, _positions, _cos, _sin, inverse: true);
            System.Numerics.Tensors.TensorPrimitives.Add(dx, rotated.AsSpan(0, n), dx);
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(rotated); }
    }
}
