using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Softmax cross-entropy per row: loss = logsumexp(z) − z[target]; rows with target &lt; 0 are ignored. One max pass and
/// one fused exp-and-sum (forward, optionally writing the gradient) or exp-and-accumulate (backward) pass per row, 16
/// lanes at a time.
/// </summary>
internal static class CrossEntropyKernels
{
    /// <summary>Lanes' partial sums are folded into the double total every this many elements (float sums stay short).</summary>
    private const int SumBlock = 512;

    public static unsafe void BackwardRows(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, ReadOnlySpan<float> lse, float scale,
        Span<float> dlogits, int start, int end)
    {
        var vscale = Vector512.Create(scale);
        fixed (float* pl = logits) fixed (float* pd = dlogits)
        {
            for (int r = start; r < end; r++)
            {
                int t = targets[r];
                if (t < 0) continue;
                float* z = pl + (long)r * v, dz = pd + (long)r * v;
                var vlse = Vector512.Create(lse[r]);
                int i = 0;
                for (; i + 16 <= v; i += 16)
                    Vector512.FusedMultiplyAdd(VectorExp.Exp(Vector512.Load(z + i) - vlse), vscale, Vector512.Load(dz + i)).Store(dz + i);
                for (; i < v; i++) dz[i] += scale * MathF.Exp(z[i] - lse[r]);
                dz[t] -= scale;
            }
        }
    }

    /// <summary>
    /// Loss and log-sum-exp of rows [start, end); returns their summed loss. With <paramref name="dlogits"/> given (the
    /// caller forms the gradient right away) the same sweep also overwrites it: e = exp(z − max) is written into dz
    /// and summed, then dz = scale · e / Σ − scale · onehot (zero for rows with target &lt; 0), one exp per logit.
    /// </summary>
    public static unsafe double ForwardRows(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> lse, float scale,
        Span<float> dlogits, int start, int end)
    {
        double sum = 0;
        bool grads = !dlogits.IsEmpty;
        fixed (float* pl = logits) fixed (float* pd = dlogits)
        {
            for (int r = start; r < end; r++)
            {
                float* z = pl + (long)r * v, dz = grads ? pd + (long)r * v : null;
                float max = TensorPrimitives.Max(new ReadOnlySpan<float>(z, v));
                double s = SumExp(z, v, max, dz);
                float l = max + (float)Math.Log(s);
                lse[r] = l;
                int t = targets[r];
                if (t >= 0) sum += l - z[t];
                if (!grads) continue;
                var row = new Span<float>(dz, v);
                if (t < 0)
                {
                    row.Clear();
                    continue;
                }
                TensorPrimitives.Multiply(row, (float)(scale / s), row);
                dz[t] -= scale;
            }
        }
        return sum;
    }

    /// <summary>Σ exp(z − max) over a row, 16 lanes at a time (lane sums folded into a double every 512 elements); the
    /// terms are also written to <paramref name="terms"/> when it is given.</summary>
    private static unsafe double SumExp(float* z, int v, float max, float* terms)
    {
        var vmax = Vector512.Create(max);
        double s = 0;
        int i = 0;
        while (i + 16 <= v)
        {
            int blockEnd = Math.Min(v, i + SumBlock);
            Vector512<float> acc = Vector512<float>.Zero;
            for (; i + 16 <= blockEnd; i += 16)
            {
                var e = VectorExp.Exp(Vector512.Load(z + i) - vmax);
                if (terms != null) e.Store(terms + i);
                acc += e;
            }
            s += Vector512.Sum(acc);
        }
        for (; i < v; i++)
        {
            float e = MathF.Exp(z[i] - max);
            if (terms != null) terms[i] = e;
            s += e;
        }
        return s;
    }
}
