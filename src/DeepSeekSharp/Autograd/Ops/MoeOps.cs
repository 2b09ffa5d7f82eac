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
        if (GradOf(Inputs[0]) is not { } dx) return;
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
        if (GradOf(Inputs[0]) is not { } dx) return;
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
        if (GradOf(scores) is not { } ds) return;
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
/// Combines routed expert outputs: y[t] = Σ_j w[t, j] · out_e[row], where expert e processed the rows listed in
/// <c>tokens[e]</c> (token index) and <c>slots[e]</c> (which of the token's k choices it was).
/// Inputs are w [N, k] followed by one output tensor [n_e, H] per expert that received tokens.
/// </summary>
internal sealed class MoeCombineOp : GradNode
{
    private readonly int[][] _tokens, _slots;
    private readonly int _k;

    public override bool ReadsOutput => false;

    private MoeCombineOp(Tensor[] inputs, int[][] tokens, int[][] slots, int k) : base(inputs)
    {
        (_tokens, _slots, _k) = (tokens, slots, k);
    }

    public static Tensor Forward(Tensor weights, Tensor[] expertOutputs, int[][] tokens, int[][] slots, int hidden)
    {
        int n = weights.Shape[0], k = weights.Shape[1];
        var y = Tensor.Zeros(n, hidden);
        var ys = y.Span; var ws = weights.Span;
        for (int e = 0; e < expertOutputs.Length; e++)
        {
            var o = expertOutputs[e].Span;
            int[] toks = tokens[e], sl = slots[e];
            for (int i = 0; i < toks.Length; i++)
            {
                var target = ys.Slice(toks[i] * hidden, hidden);
                TensorPrimitives.MultiplyAdd(o.Slice(i * hidden, hidden), ws[toks[i] * k + sl[i]], target, target);
            }
        }
        var inputs = new Tensor[expertOutputs.Length + 1];
        inputs[0] = weights;
        expertOutputs.CopyTo(inputs, 1);
        return OpBase.Record(y, () => new MoeCombineOp(inputs, tokens, slots, k), inputs);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor weights = Inputs[0];
        int hidden = output.Shape[1], k = _k;
        float[]? dw = GradOf(weights);
        var ws = weights.Span;
        for (int e = 0; e < Inputs.Length - 1; e++)
        {
            Tensor outE = Inputs[e + 1];
            float[]? dOut = GradOf(outE);
            var o = outE.Span;
            int[] toks = _tokens[e], sl = _slots[e];
            for (int i = 0; i < toks.Length; i++)
            {
                var g = dy.AsSpan(toks[i] * hidden, hidden);
                if (dw is not null) dw[toks[i] * k + sl[i]] += TensorPrimitives.Dot(o.Slice(i * hidden, hidden), g);
                if (dOut is not null) TensorPrimitives.MultiplyAdd(g, ws[toks[i] * k + sl[i]], dOut.AsSpan(i * hidden, hidden), dOut.AsSpan(i * hidden, hidden));
            }
        }
    }
}
