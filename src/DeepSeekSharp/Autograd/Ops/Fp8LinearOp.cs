using DeepSeekSharp.Fp8;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// A Linear whose three GEMMs take FP8 (E4M3) inputs with DeepSeek-V3's fine-grained scaling (training.md, FP8):
/// forward x (1×128 tiles) · W (128×128 blocks); input gradient dy (1×128 tiles) · W (blocks); weight gradient
/// dyᵀ · x with both requantised in 128×1 tiles along the tokens. Products of FP8 values accumulate in fp32 over
/// the whole K (at least as precise as promotion every 128). The input is cached for the backward as FP8 codes
/// plus scales (a quarter of its fp32 bytes), not as fp32 — or, for o_proj in V3's recipe, as E5M6 with power-of-two
/// scales (<see cref="E5M6Tiles"/>, half its fp32 bytes), which the weight-gradient GEMM requantises to 128×1 E4M3.
/// </summary>
internal sealed class Fp8LinearOp : GradNode
{
    private readonly int _rows;
    private readonly Fp8Tensor? _x;
    private readonly E5M6Tiles? _xFine;
    private readonly Fp8Tensor _w;

    private Fp8LinearOp(Tensor x, Tensor w, int rows, Fp8Tensor? xq, E5M6Tiles? xFine, Fp8Tensor wq) : base(false, x, w)
    {
        (_rows, _x, _xFine, _w) = (rows, xq, xFine, wq);
    }

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, Tensor w, bool e5m6InputCache = false)
    {
        int inDim = w.Shape[1], outDim = w.Shape[0];
        OpBase.CheckLastDim(x, inDim, "fp8 linear input");
        int n = OpBase.Rows(x);
        var be = x.Backend;
        bool record = OpBase.WillRecord(x, w);
        // Both GEMM inputs as E4M3 codes with their scales; the GEMM decodes them while packing (no fp32 copies).
        var xq = Fp8Quantizer.Rent(n, inDim, 1, 128);
        var wq = Fp8Quantizer.Rent(outDim, inDim, 128, 128);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = outDim;
        var y = Tensor.Empty(shape);
        be.QuantizeE4M3(x.Span, n, inDim, 1, 128, xq.Codes, xq.Scales, []);
        be.QuantizeE4M3(w.Span, outDim, inDim, 128, 128, wq.Codes, wq.Scales, []);
        be.GemmE4M3(false, true, n, outDim, inDim, xq, wq, 0f, y.Span, outDim);
        if (!record || e5m6InputCache)
        {
            // An E5M6-cached node keeps its own finer copy of x instead of these codes.
            Fp8Quantizer.Return(xq);
            xq = null;
        }
        if (!record)
        {
            Fp8Quantizer.Return(wq);
            return y;
        }
        var xFine = e5m6InputCache ? E5M6Tiles.Quantize(be, x.Span, n, inDim, "fp8 linear input") : null;
        return OpBase.Record(y, () => new Fp8LinearOp(x, w, n, xq, xFine, wq), x, w);
    }

    /// <summary>The E4M3 copies this node keeps for its backward are all a recomputation needs (no fp32 input); an
    /// E5M6-cached input would not reproduce the forward's E4M3 scales exactly, so that node keeps its output.</summary>
    internal override bool CanRecomputeOutput => _x is not null;

    /// <summary>From the FP8 copies: the same operands, the same GEMM (valid until this node's backward ran).</summary>
    internal override float[] RecomputeOutput(Tensor output)
    {
        LinearOp.CountRecomputation();
        Tensor w = Inputs[1];
        int inDim = w.Shape[1], outDim = w.Shape[0], n = _rows;
        var be = w.Backend;
        float[] y = StoragePool.Rent(n * outDim);
        be.GemmE4M3(false, true, n, outDim, inDim, _x!, _w, 0f, y.AsSpan(0, n * outDim), outDim);
        return y;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0], w = Inputs[1];
        int inDim = w.Shape[1], outDim = w.Shape[0], n = _rows;
        var be = w.Backend;
        var g = dy.AsSpan(0, n * outDim);
        try
        {
            if (GradOf(x) is { IsEmpty: false } dx)
            {
                var dyq = Fp8Quantizer.Rent(n, outDim, 1, 128);
                be.QuantizeE4M3(g, n, outDim, 1, 128, dyq.Codes, dyq.Scales, []);
                be.GemmE4M3(false, false, n, inDim, outDim, dyq, _w, 1f, dx, inDim);
                Fp8Quantizer.Return(dyq);
            }
            if (GradOf(w) is { IsEmpty: false } dw)
            {
                // The weight-gradient GEMM reduces over tokens, so both operands are requantised in 128×1 tiles; the
                // cached x is decoded once to be requantised (its 1×128 scales do not carry over).
                var dyc = Fp8Quantizer.Rent(n, outDim, 128, 1);
                var xc = Fp8Quantizer.Rent(n, inDim, 128, 1);
                be.QuantizeE4M3(g, n, outDim, 128, 1, dyc.Codes, dyc.Scales, []);
                float[] xd = StoragePool.Rent(n * inDim);
                if (_x is not null) Fp8Quantizer.Dequantize(be, _x, xd);
                else _xFine!.Dequantize(be, xd.AsSpan(0, n * inDim));
                be.QuantizeE4M3(xd.AsSpan(0, n * inDim), n, inDim, 128, 1, xc.Codes, xc.Scales, []);
                StoragePool.Return(xd);
                be.GemmE4M3(true, false, outDim, inDim, n, dyc, xc, 1f, dw, inDim);
                Fp8Quantizer.Return(dyc);
                Fp8Quantizer.Return(xc);
            }
        }
        finally
        {
            // Each node's backward runs once; the FP8 caches go back to the pool for the next step.
            if (_x is not null) Fp8Quantizer.Return(_x);
            _xFine?.Return();
            Fp8Quantizer.Return(_w);
        }
    }
}
