using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// y = x ⊙ mask/(1 − p) (inverted dropout). The mask is a function of its key and the element index, so the backward,
/// dx += dy ⊙ mask/(1 − p), regenerates it instead of keeping it.
/// </summary>
internal sealed class DropoutOp : GradNode
{
    private readonly DropoutMask _mask;

    private DropoutOp(Tensor x, DropoutMask mask) : base(false, x) => _mask = mask;

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, DropoutMask mask)
    {
        var y = Tensor.Empty((int[])x.Shape.Clone());
        mask.Apply(x.Span, 0, y.Span);
        return OpBase.Record(y, () => new DropoutOp(x, mask), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0];
        if (GradForWrite(x, out bool overwrite) is not { IsEmpty: false } dx) return;
        int n = (int)x.Length;
        if (overwrite)
        {
            _mask.Apply(dy.AsSpan(0, n), 0, dx);
            return;
        }
        float[] masked = StoragePool.Rent(n);
        _mask.Apply(dy.AsSpan(0, n), 0, masked);
        System.Numerics.Tensors.TensorPrimitives.Add(dx, masked.AsSpan(0, n), dx);
        StoragePool.Return(masked);
    }
}
