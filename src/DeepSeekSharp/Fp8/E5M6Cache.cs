using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Fp8;

/// <summary>
/// Bit-level E5M6 (<see cref="MiniFloat.E5M6"/>: IEEE-like, bias 15, 6 mantissa bits, max 65024) codes held in 16 bits:
/// normals round the float32 mantissa to 6 bits (nearest, ties to even) on the raw bits, subnormals (|x| &lt; 2^-14)
/// round to the 2^-20 grid, values beyond the largest finite saturate, NaN stays NaN. Agrees with the definition-based
/// encoder on every input (tested); 16 lanes per AVX-512 step.
/// </summary>
public static class E5M6Fast
{
    private const int MaxBits = 0x477E0000;   // 65024
    private const int MinNormalBits = 0x38800000; // 2^-14
    private const int CodeBase = (127 - 15) << 6;
    private static readonly ushort NaNCode = (ushort)MiniFloat.E5M6.NaNCode;
    private static readonly ushort MaxCode = (ushort)MiniFloat.E5M6.MaxCode;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Encode(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        uint sign = (u >> 20) & 0x800;
        uint a = u & 0x7FFFFFFF;
        if (a > 0x7F800000) return NaNCode;
        if (a >= MinNormalBits)
        {
            uint r = Math.Min(a, (uint)MaxBits);
            r = (r + 0xFFFF + ((r >> 17) & 1)) & 0xFFFE0000;
            return (ushort)(sign | Math.Min((r >> 17) - CodeBase, MaxCode));
        }
        float scaled = BitConverter.UInt32BitsToSingle(a) * 1048576f; // exact: power-of-two scaling
        return (ushort)(sign | (uint)MathF.Round(scaled, MidpointRounding.ToEven));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Decode(ushort code)
    {
        uint sign = (uint)(code & 0x800) << 20;
        uint e = (uint)(code >> 6) & 31, m = (uint)code & 63;
        if (e == 31) return m == 0 ? BitConverter.UInt32BitsToSingle(sign | 0x7F800000) : float.NaN;
        if (e == 0) return BitConverter.UInt32BitsToSingle(sign | BitConverter.SingleToUInt32Bits(m * (1f / 1048576f)));
        return BitConverter.UInt32BitsToSingle(sign | (e + 112) << 23 | m << 17);
    }

    /// <summary>codes[i] = E5M6(x[i] · <paramref name="inverseScale"/>); exact scaling when the scale is a power of two.</summary>
    public static void EncodeScaled(ReadOnlySpan<float> x, float inverseScale, Span<ushort> codes)
    {
        int n = x.Length, i = 0;
        if (codes.Length < n) throw new ArgumentException("codes shorter than the input");
        if (Avx512F.IsSupported)
        {
            ref float src = ref MemoryMarshal.GetReference(x);
            ref ushort dst = ref MemoryMarshal.GetReference(codes);
            var inv = Vector512.Create(inverseScale);
            var absMask = Vector512.Create(0x7FFFFFFF);
            var maxBits = Vector512.Create(MaxBits);
            var minNormal = Vector512.Create(MinNormalBits);
            var infBits = Vector512.Create(0x7F800000);
            var keep = Vector512.Create(unchecked((int)0xFFFE0000));
            for (; i + 16 <= n; i += 16)
            {
                var u = (Vector512.LoadUnsafe(ref src, (nuint)i) * inv).AsInt32();
                var a = u & absMask;
                var sign = Vector512.ShiftRightLogical(u, 20) & Vector512.Create(0x800);
                var r = Vector512.Min(a, maxBits);
                r = (r + Vector512.Create(0xFFFF) + (Vector512.ShiftRightLogical(r, 17) & Vector512.Create(1))) & keep;
                r = Vector512.Min(r, maxBits);
                var normalCode = Vector512.ShiftRightLogical(r, 17) - Vector512.Create(CodeBase);
                // Subnormals: |v|·2^20 rounded to nearest even (the default MXCSR mode) is the code (0..64).
                var subCode = Avx512F.ConvertToVector512Int32(a.AsSingle() * Vector512.Create(1048576f));
                var code = Vector512.ConditionalSelect(Vector512.LessThan(a, minNormal), subCode, normalCode) | sign;
                code = Vector512.ConditionalSelect(Vector512.GreaterThan(a, infBits), Vector512.Create((int)NaNCode), code);
                Avx512F.ConvertToVector256UInt16(code.AsUInt32()).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < n; i++) codes[i] = Encode(x[i] * inverseScale);
    }

    /// <summary>destination[i] = value(codes[i]) · <paramref name="scale"/>.</summary>
    public static void DecodeScaled(ReadOnlySpan<ushort> codes, float scale, Span<float> destination)
    {
        int n = codes.Length, i = 0;
        if (Avx512F.IsSupported)
        {
            ref ushort src = ref MemoryMarshal.GetReference(codes);
            ref float dst = ref MemoryMarshal.GetReference(destination);
            var vScale = Vector512.Create(scale);
            for (; i + 16 <= n; i += 16)
            {
                var c = Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref src, (nuint)i));
                var sign = (c & Vector512.Create(0x800)) << 20;
                var e = (c >> 6) & Vector512.Create(31);
                var m = c & Vector512.Create(63);
                var normal = sign | ((e + Vector512.Create(112)) << 23) | (m << 17);
                var subnormal = (Vector512.ConvertToSingle(m) * Vector512.Create(1f / 1048576f)).AsInt32() | sign;
                var value = Vector512.ConditionalSelect(Vector512.Equals(e, Vector512<int>.Zero), subnormal, normal).AsSingle();
                var special = Vector512.Equals(e, Vector512.Create(31)).AsSingle();
                var inf = (sign | Vector512.Create(0x7F800000)).AsSingle();
                var nanOrInf = Vector512.ConditionalSelect(Vector512.Equals(m, Vector512<int>.Zero).AsSingle(), inf, Vector512.Create(float.NaN));
                (Vector512.ConditionalSelect(special, nanOrInf, value) * vScale).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < n; i++) destination[i] = Decode(codes[i]) * scale;
    }
}

/// <summary>
/// DeepSeek-V3's cache for the input of the Linear after attention (o_proj): E5M6 codes with one power-of-two scale per
/// 1×128 tile ("round scaled"), so the backward's conversion to 128×1 tiles adds no rounding of the scale itself.
/// Twice the bytes of an E4M3 cache, 8 × its mantissa resolution; codes and scales are rented from
/// <see cref="StoragePool"/> and go back with <see cref="Return"/>.
/// </summary>
public sealed class E5M6Tiles
{
    public const int TileCols = 128;

    private readonly byte[] _codes;
    private readonly float[] _scales;

    private E5M6Tiles(int rows, int cols, byte[] codes, float[] scales) => (Rows, Cols, _codes, _scales) = (rows, cols, codes, scales);

    public int Rows { get; }
    public int Cols { get; }
    private Span<ushort> Codes => MemoryMarshal.Cast<byte, ushort>(_codes.AsSpan(0, 2 * Rows * Cols));

    /// <summary>The tile's scale: the smallest power of two s (2^-126 … 2^127) with amax / s ≤ 65024 (1 for an all-zero tile).</summary>
    public static float PowerOfTwoScale(float amax)
    {
        if (amax == 0) return 1f;
        double ratio = amax / (double)MiniFloat.E5M6.MaxFinite;
        int e = Math.ILogB(ratio);
        if (Math.ScaleB(1.0, e) < ratio) e++;
        return (float)Math.ScaleB(1.0, Math.Clamp(e, -126, 127));
    }

    /// <summary>Quantises x [rows, cols] on <paramref name="backend"/>; NaN/Inf are an error naming <paramref name="name"/>, as for the E4M3 caches.</summary>
    public static E5M6Tiles Quantize(DeepSeekSharp.Kernels.IBackend backend, ReadOnlySpan<float> x, int rows, int cols, string? name = null)
    {
        if (x.Length < rows * cols) throw new ArgumentException("input shorter than rows × cols");
        var t = new E5M6Tiles(rows, cols, StoragePool.RentBytes(2 * rows * cols), StoragePool.Rent(rows * ((cols + TileCols - 1) / TileCols)));
        try
        {
            backend.QuantizeE5M6(x, rows, cols, t.Codes, t._scales);
        }
        catch (DeepSeekSharpException e)
        {
            t.Return();
            throw new DeepSeekSharpException(name is null ? e.Message : $"{name}: {e.Message}");
        }
        return t;
    }

    /// <summary>destination = code · tile scale (exact: the scales are powers of two), on <paramref name="backend"/>.</summary>
    public void Dequantize(DeepSeekSharp.Kernels.IBackend backend, Span<float> destination) =>
        backend.DequantizeE5M6(Codes, Rows, Cols, _scales, destination);

    /// <summary>Rows [<paramref name="rowStart"/>, <paramref name="rowEnd"/>) of x [rows, cols]: power-of-two scales per 1×128 tile and E5M6 codes (rows are independent, so backends run ranges in parallel).</summary>
    public static void QuantizeRows(ReadOnlySpan<float> x, int cols, Span<ushort> codes, Span<float> scales, int rowStart, int rowEnd)
    {
        int tc = (cols + TileCols - 1) / TileCols;
        for (int r = rowStart; r < rowEnd; r++)
            for (int bj = 0; bj < tc; bj++)
            {
                int c0 = bj * TileCols, len = Math.Min(cols, c0 + TileCols) - c0;
                var tile = x.Slice(r * cols + c0, len);
                float amax = Math.Abs(TensorPrimitives.MaxMagnitude(tile));
                if (!float.IsFinite(amax)) throw new DeepSeekSharpException($"E5M6 cache: NaN/Inf in row {r}, columns {c0}..{c0 + len - 1}");
                float s = PowerOfTwoScale(amax);
                scales[r * tc + bj] = s;
                E5M6Fast.EncodeScaled(tile, 1f / s, codes.Slice(r * cols + c0, len));
            }
    }

    /// <summary>The inverse of <see cref="QuantizeRows"/> for rows [<paramref name="rowStart"/>, <paramref name="rowEnd"/>).</summary>
    public static void DequantizeRows(ReadOnlySpan<ushort> codes, int cols, ReadOnlySpan<float> scales, Span<float> destination, int rowStart, int rowEnd)
    {
        int tc = (cols + TileCols - 1) / TileCols;
        for (int r = rowStart; r < rowEnd; r++)
            for (int bj = 0; bj < tc; bj++)
            {
                int c0 = bj * TileCols, len = Math.Min(cols, c0 + TileCols) - c0;
                E5M6Fast.DecodeScaled(codes.Slice(r * cols + c0, len), scales[r * tc + bj], destination.Slice(r * cols + c0, len));
            }
    }

    /// <summary>Hands codes and scales back to the pool; the cache must not be used afterwards.</summary>
    public void Return()
    {
        StoragePool.ReturnBytes(_codes);
        StoragePool.Return(_scales);
    }
}
