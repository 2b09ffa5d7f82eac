using DeepSeekSharp.Autograd;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Fp8;

/// <summary>The FP8 Linear's three GEMMs against references built from the quantiser and fp64 products.</summary>
public class Fp8LinearTests
{
    private static Tensor Rand(Random rng, params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        for (int i = 0; i < t.Length; i++) t.Data[i] = (float)(rng.NextDouble() * 2 - 1);
        t.RequiresGrad = true;
        return t;
    }

    private static double[] MatMul(float[] a, float[] b, int m, int n, int k, bool transA, bool transB)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (double)(transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
                c[i * n + j] = s;
            }
        return c;
    }

    private static void Close(double[] want, float[] got, string what)
    {
        double scale = want.Max(Math.Abs);
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - got[i]) <= 1e-5 * scale, $"{what}[{i}]: {want[i]} vs {got[i]}");
    }

    [Fact]
    public void SwigluWithFp8CachedInputsIsExactForwardAndDifferentiatesAtTheDequantisedInputs()
    {
        var rng = new Random(9);
        int n = 70, d = 200; // a partial 1×128 tile per row
        var a = Rand(rng, n, d);
        var b = Rand(rng, n, d);
        var y = Functional.SiluMulFp8Cache(a, b);
        Assert.Equal(Functional.SiluMul(a, b).Span.ToArray(), y.Span.ToArray());
        var proj = new float[n * d];
        for (int i = 0; i < proj.Length; i++) proj[i] = (float)(rng.NextDouble() * 2 - 1);
        Backprop.Backward(Project(y, proj));
        // Intermediate gradients come from the pool and may be longer than the tensor: compare the tensor's part.
        var (da, db) = (a.Grad!.AsSpan(0, n * d).ToArray(), b.Grad!.AsSpan(0, n * d).ToArray());
        // Reference: the plain SwiGLU backward evaluated at E4M3(1×128)-rounded inputs.
        var aq = Tensor.FromArray(Fp8Quantizer.QuantizeRowTiles(a.Span, n, d).Dequantize(), n, d);
        var bq = Tensor.FromArray(Fp8Quantizer.QuantizeRowTiles(b.Span, n, d).Dequantize(), n, d);
        aq.RequiresGrad = bq.RequiresGrad = true;
        Backprop.Backward(Project(Functional.SiluMul(aq, bq), proj));
        Assert.Equal(aq.Grad!.AsSpan(0, n * d).ToArray(), da);
        Assert.Equal(bq.Grad!.AsSpan(0, n * d).ToArray(), db);
        // ...which differs from the fp32 backward (the cache really is FP8).
        a.Grad = null;
        Backprop.Backward(Project(Functional.SiluMul(a, b), proj));
        Assert.NotEqual(a.Grad!.AsSpan(0, n * d).ToArray(), da);
    }

    /// <summary>Σ c ⊙ y as a scalar (a Linear from the flattened y onto one output).</summary>
    private static Tensor Project(Tensor y, float[] c) =>
        Functional.Reshape(Functional.Linear(Functional.Reshape(y, 1, (int)y.Length), Tensor.FromArray(c, 1, c.Length)), 1);

    [Fact]
    public void ForwardAndBothGradientsFollowTheFineGrainedRecipe()
    {
        var rng = new Random(3);
        int n = 150, inDim = 200, outDim = 140; // partial tiles in every direction
        var x = Rand(rng, n, inDim);
        var w = Rand(rng, outDim, inDim);
        var y = Functional.LinearFp8(x, w);
        var dy = new float[n * outDim];
        for (int i = 0; i < dy.Length; i++) dy[i] = (float)(rng.NextDouble() * 2 - 1);
        var c = Tensor.FromArray(dy, 1, dy.Length);
        Backprop.Backward(Functional.Reshape(Functional.Linear(Functional.Reshape(y, 1, n * outDim), c), 1));

        var xq = Fp8Quantizer.QuantizeRowTiles(x.Span, n, inDim).Dequantize();
        var wq = Fp8Quantizer.QuantizeBlocks(w.Span, outDim, inDim).Dequantize();
        Close(MatMul(xq, wq, n, outDim, inDim, false, true), y.Span.ToArray(), "y");
        var gq = Fp8Quantizer.QuantizeRowTiles(dy, n, outDim).Dequantize();
        Close(MatMul(gq, wq, n, inDim, outDim, false, false), x.Grad!, "dx");
        var gc = Fp8Quantizer.QuantizeColumnTiles(dy, n, outDim).Dequantize();
        var xc = Fp8Quantizer.QuantizeColumnTiles(xq, n, inDim).Dequantize();
        Close(MatMul(gc, xc, outDim, inDim, n, true, false), w.Grad!, "dW");

        // And the FP8 result is close to (but not equal to) the fp32 Linear: the quantisation is really applied.
        var y32 = Functional.Linear(x, w).Span.ToArray();
        double num = y32.Zip(y.Span.ToArray(), (a, b) => (double)(a - b) * (a - b)).Sum(), den = y32.Sum(a => (double)a * a);
        Assert.InRange(Math.Sqrt(num / den), 0.005, 0.1); // FP8's ~3% relative error, neither zero nor wild
    }

    [Fact]
    public void AnE5M6CachedInputChangesOnlyTheWeightGradientWhichUsesTheFinerCache()
    {
        var rng = new Random(8);
        int n = 150, inDim = 200, outDim = 140;
        var dy = new float[n * outDim];
        for (int i = 0; i < dy.Length; i++) dy[i] = (float)(rng.NextDouble() * 2 - 1);
        var x0 = Rand(rng, n, inDim);
        var w0 = Rand(rng, outDim, inDim);
        (float[] Y, float[] Dx, float[] Dw) Run(bool e5m6)
        {
            var x = Tensor.FromArray(x0.Span.ToArray(), n, inDim); x.RequiresGrad = true;
            var w = new Parameter([outDim, inDim], materialize: true);
            w0.Span.CopyTo(w.Span);
            var y = Functional.LinearFp8(x, w, e5m6);
            Backprop.Backward(Functional.Reshape(Functional.Linear(Functional.Reshape(y, 1, n * outDim), Tensor.FromArray(dy, 1, dy.Length)), 1));
            return (y.Span.ToArray(), x.Grad!.AsSpan(0, n * inDim).ToArray(), w.Grad!.ToArray());
        }
        var plain = Run(false);
        var fine = Run(true);
        Assert.Equal(plain.Y, fine.Y);      // the forward GEMM reads E4M3 either way
        Assert.Equal(plain.Dx, fine.Dx);    // the input gradient never reads x
        // dW from the E5M6-rounded input, requantised to 128×1 E4M3 tiles.
        var cache = E5M6Tiles.Quantize(DeepSeekSharp.Kernels.Cpu.CpuBackend.Default, x0.Span, n, inDim);
        var xe = new float[n * inDim];
        cache.Dequantize(DeepSeekSharp.Kernels.Cpu.CpuBackend.Default, xe);
        var xc = Fp8Quantizer.QuantizeColumnTiles(xe, n, inDim).Dequantize();
        var gc = Fp8Quantizer.QuantizeColumnTiles(dy, n, outDim).Dequantize();
        Close(MatMul(gc, xc, outDim, inDim, n, true, false), fine.Dw, "dW (E5M6 cache)");
        Assert.NotEqual(plain.Dw, fine.Dw);
    }
}
