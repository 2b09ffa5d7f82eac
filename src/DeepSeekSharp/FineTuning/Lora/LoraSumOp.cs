using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>y = base + scale · delta (same shapes): LoRA's sum of the frozen product and the scaled low-rank path.</summary>
internal sealed class LoraSumOp : GradNode
{
    private readonly float _scale;

    private LoraSumOp(Tensor baseOutput, Tensor delta, float scale) : base(false, baseOutput, delta) { _scale = scale; }

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor baseOutput, Tensor delta, float scale)
    {
        if (baseOutput.Length != delta.Length) throw new ArgumentException($"lora sum: {baseOutput} and {delta} differ");
        var y = Tensor.Empty((int[])baseOutput.Shape.Clone());
        TensorPrimitives.MultiplyAdd(delta.Span, scale, baseOutput.Span, y.Span);
        return OpBase.Record(y, () => new LoraSumOp(baseOutput, delta, scale), baseOutput, delta);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        var g = dy.AsSpan(0, (int)output.Length);
        if (GradOf(Inputs[0]) is { IsEmpty: false } db) TensorPrimitives.Add(db, g, db);
        if (GradOf(Inputs[1]) is { IsEmpty: false } dd) TensorPrimitives.MultiplyAdd(g, _scale, dd, dd);
    }
}
