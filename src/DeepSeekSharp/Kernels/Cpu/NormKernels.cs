using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>RMSNorm: y = x · r · w with r = 1/sqrt(mean(x²) + eps), computed in fp32 (model.md).</summary>
internal static class NormKernels
{
    public static void RmsNormRows(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, int d, Span<float> y, Span<float> invRms, int start, int end)
    {
        for (int r = start; r < end; r++)
        {
            var xr = x.Slice(r * d, d);
            var yr = y.Slice(r * d, d);
            float inv = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xr) / d + eps);
            invRms[r] = inv;
            TensorPrimitives.Multiply(xr, w, yr);
            TensorPrimitives.Multiply(yr, inv, yr);
        }
    }

    /// <summary>dx_i = r·w_i·dy_i − x_i·r³/d · Σ_j dy_j·w_j·x_j. Uses <paramref name="scratch"/> [d].</summary>
    public static void RmsNormBackwardRowsDx(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> invRms, ReadOnlySpan<float> dy,
        int d, Span<float> dx, Span<float> scratch, int start, int end)
    {
        for (int r = start; r < end; r++)
        {
            var xr = x.Slice(r * d, d);
            var dyr = dy.Slice(r * d, d);
            var dxr = dx.Slice(r * d, d);
            float inv = invRms[r];
            TensorPrimitives.Multiply(dyr, w, scratch);           // g = dy ⊙ w
            float dot = TensorPrimitives.Dot(scratch, xr);
            float c = -dot * inv * inv * inv / d;
            TensorPrimitives.MultiplyAdd(scratch, inv, dxr, dxr); // dx += r·g
            TensorPrimitives.MultiplyAdd(xr, c, dxr, dxr);        // dx += c·x
        }
    }

    /// <summary>dw_i += Σ_rows dy_i · x_i · r (into a per-chunk partial).</summary>
    public static void RmsNormBackwardRowsDw(ReadOnlySpan<float> x, ReadOnlySpan<float> invRms, ReadOnlySpan<float> dy, int d,
        Span<float> dwPartial, Span<float> scratch, int start, int end)
    {
        for (int r = start; r < end; r++)
        {
            TensorPrimitives.Multiply(dy.Slice(r * d, d), x.Slice(r * d, d), scratch);
            TensorPrimitives.MultiplyAdd(scratch, invRms[r], dwPartial, dwPartial);
        }
    }
}
