using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>Softmax cross-entropy per row: loss = logsumexp(z) − z[target]; rows with target &lt; 0 are ignored.</summary>
internal static class CrossEntropyKernels
{
    public static double ForwardRows(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> lse, int start, int end)
    {
        double sum = 0;
        // Exp in blocks on the stack keeps this allocation-free for any vocabulary size.
        Span<float> tmp = stackalloc float[512];
        for (int r = start; r < end; r++)
        {
            var z = logits.Slice(r * v, v);
            float max = TensorPrimitives.Max(z);
            double s = 0;
            for (int i = 0; i < v; i += tmp.Length)
            {
                int n = Math.Min(tmp.Length, v - i);
                TensorPrimitives.Subtract(z.Slice(i, n), max, tmp[..n]);
                TensorPrimitives.Exp(tmp[..n], tmp[..n]);
                s += TensorPrimitives.Sum(tmp[..n]);
            }
            float l = max + (float)Math.Log(s);
            lse[r] = l;
            int t = targets[r];
            if (t >= 0) sum += l - z[t];
        }
        return sum;
    }

    public static void BackwardRows(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, ReadOnlySpan<float> lse, float scale,
        Span<float> dlogits, int start, int end)
    {
        Span<float> tmp = stackalloc float[512];
        for (int r = start; r < end; r++)
        {
            int t = targets[r];
            if (t < 0) continue;
            var z = logits.Slice(r * v, v);
            var dz = dlogits.Slice(r * v, v);
            for (int i = 0; i < v; i += tmp.Length)
            {
                int n = Math.Min(tmp.Length, v - i);
                TensorPrimitives.Subtract(z.Slice(i, n), lse[r], tmp[..n]);
                TensorPrimitives.Exp(tmp[..n], tmp[..n]);
                TensorPrimitives.MultiplyAdd(tmp[..n], scale, dz.Slice(i, n), dz.Slice(i, n));
            }
            dz[t] -= scale;
        }
    }
}
