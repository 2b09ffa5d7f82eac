using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// exp for 16 floats at once in single precision: range reduction x = n·ln 2 + r (ln 2 split in two so n·ln 2 is
/// exact), a degree-7 minimax-style polynomial for e^r on |r| ≤ ln 2 / 2 (Cephes' expf coefficients) and 2^n put
/// straight into the exponent bits. Within 2 ulp of the correctly rounded result on [−87.3, ln(float.MaxValue)]
/// (checked against double-precision Math.Exp in the tests); 0 below (where the true value is a denormal), +inf
/// above, NaN for NaN.
/// <see cref="Vector512.Exp(Vector512{float})"/> evaluates in double precision for full accuracy, about three times the
/// work: softmax and SiLU do not need that last half ulp.
/// </summary>
internal static class VectorExp
{
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    private const float MinInput = -87.3f, MaxInput = 88.72283f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var overflow = Vector512.GreaterThan(x, Vector512.Create(MaxInput));
        var underflow = Vector512.LessThan(x, Vector512.Create(MinInput));
        var nan = ~Vector512.Equals(x, x);
        var c = Vector512.Max(Vector512.Min(x, Vector512.Create(MaxInput)), Vector512.Create(MinInput));
        var n = Vector512.Round(c * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Hi), c);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Lo), r);
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        p = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        // 2^n with n ∈ [−126, 128]: 2^128 is not a float, so n = 128 (inputs just below ln(float.MaxValue)) is 2^127 · 2.
        var top = Vector512.GreaterThan(n, Vector512.Create(127f));
        var e = Vector512.ConvertToInt32(Vector512.Min(n, Vector512.Create(127f)));
        var scale = Vector512.ShiftLeft(e + Vector512.Create(127), 23).AsSingle();
        var result = p * scale * Vector512.ConditionalSelect(top, Vector512.Create(2f), Vector512<float>.One);
        result = Vector512.ConditionalSelect(underflow, Vector512<float>.Zero, result);
        result = Vector512.ConditionalSelect(overflow, Vector512.Create(float.PositiveInfinity), result);
        return Vector512.ConditionalSelect(nan, x, result);
    }

    /// <summary>
    /// y = exp(x) elementwise, in place allowed. Lengths of 16 and more end with one vector over the last 16 elements,
    /// computed from the inputs before anything is stored (so an in-place call never exponentiates twice); shorter
    /// ones go through a padded vector.
    /// </summary>
    public static unsafe void Exp(ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException("output shorter than input");
        int n = x.Length;
        fixed (float* px = x) fixed (float* py = y)
        {
            if (n < 16)
            {
                float* tmp = stackalloc float[16];
                for (int j = 0; j < 16; j++) tmp[j] = j < n ? px[j] : 0f;
                Exp(Vector512.Load(tmp)).Store(tmp);
                for (int j = 0; j < n; j++) py[j] = tmp[j];
                return;
            }
            var last = Exp(Vector512.Load(px + n - 16));
            for (int i = 0; i + 16 <= n; i += 16) Exp(Vector512.Load(px + i)).Store(py + i);
            last.Store(py + n - 16);
        }
    }
}
