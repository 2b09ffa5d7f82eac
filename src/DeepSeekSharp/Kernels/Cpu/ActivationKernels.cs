using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>SwiGLU's gating: y = silu(a) ⊙ b, silu(a) = a·σ(a).</summary>
internal static class ActivationKernels
{
    private const int Block = 1024;

    public static void SiluMul(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        Span<float> sig = stackalloc float[Block];
        for (int i = 0; i < a.Length; i += Block)
        {
            int n = Math.Min(Block, a.Length - i);
            var s = sig[..n];
            TensorPrimitives.Sigmoid(a.Slice(i, n), s);
            TensorPrimitives.Multiply(a.Slice(i, n), s, s);
            TensorPrimitives.Multiply(s, b.Slice(i, n), y.Slice(i, n));
        }
    }

    /// <summary>da += dy·b·σ(a)(1 + a(1−σ(a))); db += dy·silu(a).</summary>
    public static void SiluMulBackward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> dy, Span<float> da, Span<float> db)
    {
        Span<float> sig = stackalloc float[Block];
        Span<float> t = stackalloc float[Block];
        for (int i = 0; i < a.Length; i += Block)
        {
            int n = Math.Min(Block, a.Length - i);
            var s = sig[..n];
            var tmp = t[..n];
            var ai = a.Slice(i, n);
            var dyi = dy.Slice(i, n);
            TensorPrimitives.Sigmoid(ai, s);
            if (!db.IsEmpty)
            {
                TensorPrimitives.Multiply(ai, s, tmp);                 // silu(a)
                TensorPrimitives.MultiplyAdd(tmp, dyi, db.Slice(i, n), db.Slice(i, n));
            }
            if (!da.IsEmpty)
            {
                // σ(1 + a(1−σ)) = σ + a·σ − a·σ²
                TensorPrimitives.Subtract(1f, s, tmp);                 // 1−σ
                TensorPrimitives.MultiplyAdd(ai, tmp, 1f, tmp);        // 1 + a(1−σ)
                TensorPrimitives.Multiply(tmp, s, tmp);
                TensorPrimitives.Multiply(tmp, b.Slice(i, n), tmp);
                TensorPrimitives.MultiplyAdd(tmp, dyi, da.Slice(i, n), da.Slice(i, n));
            }
        }
    }
}
