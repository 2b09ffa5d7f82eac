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
