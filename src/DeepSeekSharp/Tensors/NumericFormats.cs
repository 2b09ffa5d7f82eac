using System.Runtime.InteropServices;

namespace DeepSeekSharp.Tensors;

/// <summary>Conversions between storage formats (BF16, F16, FP8 E4M3FN/E5M2) and fp32.</summary>
public static class NumericFormats
{
    private static readonly float[] E4M3Table = BuildTable(exponentBits: 4, mantissaBits: 3, bias: 7, ieeeSpecials: false);
    private static readonly float[] E5M2Table = BuildTable(exponentBits: 5, mantissaBits: 2, bias: 15, ieeeSpecials: true);

    /// <summary>Decodes one FP8 code from the format definition (used to build the lookup tables).</summary>
    public static float DecodeFp8(byte code, int exponentBits, int mantissaBits, int bias, bool ieeeSpecials)
    {
        int sign = code >> 7;
        int exp = (code >> mantissaBits) & ((1 << exponentBits) - 1);
        int man = code & ((1 << mantissaBits) - 1);
        int maxExp = (1 << exponentBits) - 1;
        double value;
        if (ieeeSpecials && exp == maxExp) value = man == 0 ? double.PositiveInfinity : double.NaN;
        else if (!ieeeSpecials && exp == maxExp && man == (1 << mantissaBits) - 1) value = double.NaN; // E4M3FN: S.1111.111
        else if (exp == 0) value = man / (double)(1 << mantissaBits) * Math.Pow(2, 1 - bias);
        else value = (1 + man / (double)(1 << mantissaBits)) * Math.Pow(2, exp - bias);
        return (float)(sign == 1 ? -value : value);
    }

    private static float[] BuildTable(int exponentBits, int mantissaBits, int bias, bool ieeeSpecials)
    {
        var t = new float[256];
        for (int c = 0; c < 256; c++) t[c] = DecodeFp8((byte)c, exponentBits, mantissaBits, bias, ieeeSpecials);
        return t;
    }

    public static float E4M3ToFloat(byte code) => E4M3Table[code];

    public static float E5M2ToFloat(byte code) => E5M2Table[code];

    public static float Bf16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>fp32 → bf16 with round-to-nearest-even; NaN stays NaN.</summary>
    public static ushort FloatToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Converts raw little-endian <paramref name="source"/> of <paramref name="dtype"/> to fp32.</summary>
    public static void ToFloat32(DType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (dtype)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                break;
            case DType.BF16:
            {
                var s = MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < s.Length; i++) destination[i] = Bf16ToFloat(s[i]);
                break;
            }
            case DType.F16:
            {
                var s = MemoryMarshal.Cast<byte, Half>(source);
                for (int i = 0; i < s.Length; i++) destination[i] = (float)s[i];
                break;
            }
            case DType.F8E4M3:
                for (int i = 0; i < source.Length; i++) destination[i] = E4M3Table[source[i]];
                break;
            case DType.F8E5M2:
                for (int i = 0; i < source.Length; i++) destination[i] = E5M2Table[source[i]];
                break;
            case DType.F64:
            {
                var s = MemoryMarshal.Cast<byte, double>(source);
                for (int i = 0; i < s.Length; i++) destination[i] = (float)s[i];
                break;
            }
            default:
                throw new DeepSeekSharpException($"dtype {dtype} cannot be read as floating point");
        }
    }

    public static int SizeOf(DType dtype) => dtype switch
    {
        DType.F64 or DType.I64 => 8,
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 or DType.I16 => 2,
        _ => 1,
    };
}
