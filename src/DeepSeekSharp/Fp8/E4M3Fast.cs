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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(byte code) => Decode[code];

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
