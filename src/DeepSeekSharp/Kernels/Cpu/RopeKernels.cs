using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Rotary embedding on INTERLEAVED pairs (2i, 2i+1) of the rope part (model.md, "RoPE layout"):
/// (x0, x1) → (x0·c − x1·s, x0·s + x1·c); the inverse rotation is the backward.
/// </summary>
internal static class RopeKernels
{
    public static void Apply(ReadOnlySpan<float> x, Span<float> y, int groups, int stride, int offset, int ropeDim,
        ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse, int start, int end)
    {
        int half = ropeDim / 2;
        int rowLen = groups * stride;
        float sign = inverse ? -1f : 1f;
        for (int r = start; r < end; r++)
        {
            var xr = x.Slice(r * rowLen, rowLen);
            var yr = y.Slice(r * rowLen, rowLen);
            if (!Unsafe.AreSame(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(xr), ref System.Runtime.InteropServices.MemoryMarshal.GetReference(yr)))
                xr.CopyTo(yr);
            var c = cos.Slice(positions[r] * half, half);
            var s = sin.Slice(positions[r] * half, half);
            for (int g = 0; g < groups; g++)
            {
                int baseIdx = g * stride + offset;
                for (int i = 0; i < half; i++)
                {
                    float x0 = xr[baseIdx + 2 * i], x1 = xr[baseIdx + 2 * i + 1];
                    float si = sign * s[i];
                    yr[baseIdx + 2 * i] = x0 * c[i] - x1 * si;
                    yr[baseIdx + 2 * i + 1] = x0 * si + x1 * c[i];
                }
            }
        }
    }
}
