using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Fp8;

/// <summary>
/// Branch-light E4M3 encoding from float32 bits (no floating-point library calls): normals round the mantissa to
/// 3 bits with round-to-nearest-even on the raw bits, subnormals (|x| &lt; 2^-6) round to the 2^-9 grid, values
/// beyond 448 saturate. Agrees with <see cref="MiniFloat.E4M3"/>'s definition-based encoder on every input (tested).
/// </summary>
public static class E4M3Fast
{
    private static readonly float[] Decode = Enumerable.Range(0, 256).Select(c => MiniFloat.E4M3.Decode(c)).ToArray();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Encode(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        uint sign = (u >> 24) & 0x80;
        uint a = u & 0x7FFFFFFF;
        if (a > 0x7F800000) return 0x7F;                // NaN
        if (a >= 0x43E00000) return (byte)(sign | 0x7E); // ≥ 448 (and inf): saturate
        if (a >= 0x3C800000)                              // ≥ 2^-6: normal E4M3
        {
            uint r = (a + 0x7FFFF + ((a >> 20) & 1)) & 0xFFF00000;
            int exp = (int)(r >> 23) - 127;
            uint man = (r >> 20) & 7;
            uint code = (uint)(exp + 7) << 3 | man;
            return (byte)(sign | Math.Min(code, 0x7Eu));
        }
        float scaled = BitConverter.UInt32BitsToSingle(a) * 512f; // exact: power-of-two scaling
        return (byte)(sign | (uint)MathF.Round(scaled, MidpointRounding.ToEven));
    }

    /// <summary>
    /// The bulk form of <see cref="Encode"/> with the division by the tile scale fused in:
    /// codes[i] = E4M3(x[i] / scales[i]) and, when <paramref name="dequantized"/> is not empty,
    /// dequantized[i] = value(codes[i]) · scales[i] (what an FP8 GEMM multiplies). 16 lanes per AVX-512 step with the
    /// same bit-level rounding as the scalar encoder; either output may be empty.
    /// </summary>
    public static void EncodeDivided(ReadOnlySpan<float> x, ReadOnlySpan<float> scales, Span<byte> codes, Span<float> dequantized)
    {
        int n = x.Length;
        if (scales.Length < n || (!codes.IsEmpty && codes.Length < n) || (!dequantized.IsEmpty && dequantized.Length < n))
            throw new ArgumentException("outputs shorter than the input");
        bool wantCodes = !codes.IsEmpty, wantValues = !dequantized.IsEmpty;
        int i = 0;
        if (Avx512F.IsSupported)
        {
            ref float src = ref MemoryMarshal.GetReference(x);
            ref float sc = ref MemoryMarshal.GetReference(scales);
            var absMask = Vector512.Create(0x7FFFFFFF);
            var minNormal = Vector512.Create(0x3C800000);   // 2^-6
            var maxBits = Vector512.Create(0x43E00000);     // 448
            var infBits = Vector512.Create(0x7F800000);
            var roundBias = Vector512.Create(0x7FFFF);
            var one = Vector512.Create(1);
            var keep = Vector512.Create(unchecked((int)0xFFF00000));
            var codeBase = Vector512.Create(960);           // (127 − 7) << 3
            var maxCode = Vector512.Create(0x7E);
            for (; i + 16 <= n; i += 16)
            {
                var s = Vector512.LoadUnsafe(ref sc, (nuint)i);
                var v = Vector512.LoadUnsafe(ref src, (nuint)i) / s;
                var u = v.AsInt32();
                var a = u & absMask;
                var sign = Vector512.ShiftRightLogical(u, 24) & Vector512.Create(0x80);
                // Normals: round the mantissa to 3 bits (nearest, ties to even) on the raw bits, saturate at 448.
                var r = Vector512.Min(a, maxBits);
                r = (r + roundBias + (Vector512.ShiftRightLogical(r, 20) & one)) & keep;
                r = Vector512.Min(r, maxBits);
                var normalCode = Vector512.ShiftRightLogical(r, 20) - codeBase;
                // Subnormals: |v|·2^9 rounded to nearest even (the default MXCSR mode) is the code itself (0..8).
                var subScaled = a.AsSingle() * Vector512.Create(512f);
                var subCode = Avx512F.ConvertToVector512Int32(subScaled);
                var isSub = Vector512.LessThan(a, minNormal);
                var code = Vector512.ConditionalSelect(isSub, subCode, normalCode);
                code = Vector512.Min(code, maxCode);
                var isNaN = Vector512.GreaterThan(a, infBits);
                code = Vector512.ConditionalSelect(isNaN, Vector512.Create(0x7F), code | sign);
                if (wantCodes) Avx512F.ConvertToVector128Byte(code).StoreUnsafe(ref MemoryMarshal.GetReference(codes), (nuint)i);
                if (wantValues)
                {
                    var magnitude = Vector512.ConditionalSelect(isSub, (Vector512.ConvertToSingle(subCode) * Vector512.Create(1f / 512f)).AsInt32(), r);
                    var value = (magnitude | Vector512.ShiftLeft(sign, 24)).AsSingle();
                    value = Vector512.ConditionalSelect(isNaN.AsSingle(), Vector512.Create(float.NaN), value);
                    (value * s).StoreUnsafe(ref MemoryMarshal.GetReference(dequantized), (nuint)i);
                }
            }
        }
        for (; i < n; i++)
        {
            byte c = Encode(x[i] / scales[i]);
            if (wantCodes) codes[i] = c;
            if (wantValues) dequantized[i] = Decode[c] * scales[i];
        }
    }

    /// <summary>
    /// destination[i] = value(codes[i]) · scale, 16 codes per AVX-512 step: normals are rebuilt from the bits
    /// (exponent + 120, mantissa &lt;&lt; 20), subnormals as mantissa · 2^-9, S.1111.111 as NaN.
    /// </summary>
    public static void DecodeScaled(ReadOnlySpan<byte> codes, float scale, Span<float> destination)
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            var vScale = Vector512.Create(scale);
            var sub = Vector512.Create(1f / 512f);
            ref byte src = ref MemoryMarshal.GetReference(codes);
            ref float dst = ref MemoryMarshal.GetReference(destination);
            for (; i + 16 <= codes.Length; i += 16)
            {
                var x = Avx512F.ConvertToVector512Int32(Vector128.LoadUnsafe(ref src, (nuint)i));
                var sign = (x & Vector512.Create(0x80)) << 24;
                var e = (x >> 3) & Vector512.Create(0xF);
                var m = x & Vector512.Create(7);
                var normal = sign | ((e + Vector512.Create(120)) << 23) | (m << 20);
                var subnormal = Vector512.ConvertToSingle(m) * sub;
                var value = Vector512.ConditionalSelect(Vector512.Equals(e, Vector512<int>.Zero).AsSingle(),
                    (subnormal.AsInt32() | sign).AsSingle(), normal.AsSingle());
                var isNaN = Vector512.Equals(x & Vector512.Create(0x7F), Vector512.Create(0x7F)).AsSingle();
                value = Vector512.ConditionalSelect(isNaN, Vector512.Create(float.NaN), value);
                (value * vScale).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < codes.Length; i++) destination[i] = Decode[codes[i]] * scale;
    }
}
