using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>y = a + b (same shapes).</summary>
internal sealed class AddOp : GradNode
{
    private readonly float _bScale;

    private AddOp(Tensor a, Tensor b, float bScale) : base(false, a, b) { _bScale = bScale; }

    public override bool ReadsOutput => false;

    /// <summary>y = a + bScale·b (same lengths); bScale ≠ 1 is LoRA's scaled low-rank path added to the frozen product.</summary>
    public static Tensor Forward(Tensor a, Tensor b, float bScale = 1f)
    {
        if (a.Length != b.Length) throw new ArgumentException($"add: {a} and {b} differ");
        var y = Tensor.Empty((int[])a.Shape.Clone());
        if (bScale == 1f) TensorPrimitives.Add(a.Span, b.Span, y.Span);
        else TensorPrimitives.MultiplyAdd(b.Span, bScale, a.Span, y.Span);
        return OpBase.Record(y, () => new AddOp(a, b, bScale), a, b);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        var g = dy.AsSpan(0, (int)output.Length);
        bool adopted = false;
        for (int i = 0; i < Inputs.Length; i++)
        {
            var input = Inputs[i];
            float scale = i == 1 ? _bScale : 1f;
            // The output's gradient buffer is dropped after this call, so the first input without a gradient yet
            // takes it over instead of a zeroed copy (the residual stream's gradient is handed down the blocks).
            if (!adopted && scale == 1f && input.RequiresGrad && input.Grad is null && input is not Parameter && dy.Length >= input.Length)
            {
                input.Grad = dy;
                adopted = true;
                continue;
            }
            if (GradOf(input) is not { IsEmpty: false } d) continue;
            if (scale == 1f) TensorPrimitives.Add(d, g, d);
            else TensorPrimitives.MultiplyAdd(g, scale, d, d);
        }
    }
}

/// <summary>
/// y = silu(a) ⊙ b, the SwiGLU gate (a = gate_proj(x), b = up_proj(x)). The backward reads the inputs, either
/// as they are or, with <c>fp8Cache</c>, from FP8 copies (E4M3, 1×128 tiles) made in the forward: DeepSeek-V3 caches
/// the SwiGLU inputs in FP8 (training.md, FP8), so their fp32 values can go; the forward is exact either way and the
/// backward then differentiates at the dequantised inputs.
/// </summary>
internal sealed class SiluMulOp : GradNode
{
    private readonly Fp8Tensor? _a, _b;

    private SiluMulOp(Tensor a, Tensor b, Fp8Tensor? qa, Fp8Tensor? qb) : base(readsInputs: qa is null, a, b) { (_a, _b) = (qa, qb); }

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor a, Tensor b, bool fp8Cache = false)
    {
        if (a.Length != b.Length) throw new ArgumentException($"silu_mul: {a} and {b} differ");
        var y = Tensor.Empty((int[])a.Shape.Clone());
        a.Backend.SiluMulForward(a.Span, b.Span, y.Span);
        if (!OpBase.WillRecord(a, b)) return y;
        var (qa, qb) = fp8Cache ? (Cache(a), Cache(b)) : (null, null);
        return OpBase.Record(y, () => new SiluMulOp(a, b, qa, qb), a, b);
    }

    private static Fp8Tensor Cache(Tensor x)
    {
        int cols = x.Shape[^1], rows = OpBase.Rows(x);
        var q = Fp8Quantizer.Rent(rows, cols, 1, 128);
        x.Backend.QuantizeE4M3(x.Span, rows, cols, 1, 128, q.Codes, q.Scales, []);
        return q;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor a = Inputs[0], b = Inputs[1];
        int n = (int)a.Length;
        var da = GradForWrite(a, out bool freshA);
        var db = GradForWrite(b, out bool freshB);
        // One kernel call either stores both gradients or accumulates both: a fresh buffer next to an accumulating one
        // (or a = b) is zeroed so that it can accumulate too.
        bool overwrite = (freshA || da.IsEmpty) && (freshB || db.IsEmpty);
        if (!overwrite)
        {
            if (freshA) da.Clear();
            if (freshB) db.Clear();
        }
        if (_a is null || _b is null)
        {
            a.Backend.SiluMulBackward(a.Span, b.Span, dy.AsSpan(0, n), da, db, accumulate: !overwrite);
            return;
        }
        float[] ad = StoragePool.Rent(n), bd = StoragePool.Rent(n);
        try
        {
            Fp8Quantizer.Dequantize(a.Backend, _a, ad);
            Fp8Quantizer.Dequantize(a.Backend, _b, bd);
            a.Backend.SiluMulBackward(ad.AsSpan(0, n), bd.AsSpan(0, n), dy.AsSpan(0, n), da, db, accumulate: !overwrite);
        }
        finally
        {
            StoragePool.Return(ad);
            StoragePool.Return(bd);
            Fp8Quantizer.Return(_a);
            Fp8Quantizer.Return(_b);
        }
    }
}

/// <summary>Σ_i c_i · x_i over scalars (loss mixing: main CE + λ·MTP + α·balance).</summary>
internal sealed class WeightedSumOp : GradNode
{
    private readonly float[] _weights;

    private WeightedSumOp(Tensor[] xs, float[] weights) : base(xs) { _weights = weights; }

    public static Tensor Forward(Tensor[] xs, float[] weights)
    {
        float sum = 0;
        for (int i = 0; i < xs.Length; i++)
        {
            if (xs[i].Length != 1) throw new ArgumentException("weighted sum takes scalars");
            sum += weights[i] * xs[i].Data[0];
        }
        var y = Tensor.FromArray([sum], 1);
        return OpBase.Record(y, () => new WeightedSumOp(xs, weights), xs);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        for (int i = 0; i < Inputs.Length; i++)
            if (GradOf(Inputs[i]) is { IsEmpty: false } d) d[0] += _weights[i] * dy[0];
    }
}

/// <summary>
/// y = Σ_i c_i · x_i for a tensor x and constant coefficients c (a scalar [1]); dx = dy · c. A policy-gradient
/// surrogate: with c = dL/dx computed outside the graph, its gradient is that of L.
/// </summary>
internal sealed class DotOp : GradNode
{
    private readonly float[] _coefficients;

    private DotOp(Tensor x, float[] coefficients) : base(x) { _coefficients = coefficients; }

    public static Tensor Forward(Tensor x, float[] coefficients)
    {
        if (coefficients.Length != x.Length) throw new ArgumentException($"dot: {coefficients.Length} coefficients for {x.Length} elements");
        var y = Tensor.FromArray([System.Numerics.Tensors.TensorPrimitives.Dot(x.Span, coefficients)], 1);
        return OpBase.Record(y, () => new DotOp(x, coefficients), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        if (GradOf(Inputs[0]) is { IsEmpty: false } d) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(_coefficients, dy[0], d, d);
    }
}

/// <summary>
/// y = x rounded to BF16 (round to nearest even), with a straight-through gradient: bf16 mixed precision keeps fp32
/// master weights and computes with their BF16 copies.
/// </summary>
internal sealed class RoundBf16Op : GradNode
{
    private RoundBf16Op(Tensor x) : base(x) { }

    public static Tensor Forward(Tensor x)
    {
        var y = Tensor.Empty((int[])x.Shape.Clone());
        NumericFormats.RoundToBf16(x.Span, y.Span);
        return OpBase.Record(y, () => new RoundBf16Op(x), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        int n = checked((int)Inputs[0].Length);
        if (GradOf(Inputs[0]) is { IsEmpty: false } dx) TensorPrimitives.Add(dx, dy.AsSpan(0, n), dx);
    }
}
