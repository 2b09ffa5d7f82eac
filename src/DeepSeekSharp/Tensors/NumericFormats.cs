using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Tensors;

/// <summary>Conversions between storage formats (BF16, F16, FP8 E4M3FN/E5M2) and fp32.</summary>
public static class NumericFormats
{
    /// <summary>OCP E4M3FN code → value (the codec lives in <see cref="MiniFloat"/>).</summary>
    public static float E4M3ToFloat(byte code) => MiniFloat.E4M3.Decode(code);

    public static float E5M2ToFloat(byte code) => MiniFloat.E5M2.Decode(code);

    public static float Bf16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>fp32 → bf16 with round-to-nearest-even; NaN stays NaN.</summary>
    public static ushort FloatToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Bulk <see cref="Bf16ToFloat(ushort)"/> (exact widening).</summary>
    public static void Bf16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 32 <= source.Length; i += 32)
            {
                var v = Vector512.Create(source.Slice(i, 32));
                var (lo, hi) = Vector512.Widen(v);
                Vector512.ShiftLeft(lo, 16).AsSingle().CopyTo(destination.Slice(i, 16));
                Vector512.ShiftLeft(hi, 16).AsSingle().CopyTo(destination.Slice(i + 16, 16));
            }
        for (; i < source.Length; i++) destination[i] = Bf16ToFloat(source[i]);
    }

    /// <summary>Bulk <see cref="FloatToBf16(float)"/>: round to nearest even (finite values and quiet NaNs).</summary>
    public static void FloatToBf16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var bias = Vector512.Create(0x7FFFu);
            var one = Vector512.Create(1u);
            for (; i + 32 <= source.Length; i += 32)
            {
                var lo = Vector512.Create(source.Slice(i, 16)).AsUInt32();
                var hi = Vector512.Create(source.Slice(i + 16, 16)).AsUInt32();
                lo = Vector512.ShiftRightLogical(lo + bias + (Vector512.ShiftRightLogical(lo, 16) & one), 16);
                hi = Vector512.ShiftRightLogical(hi + bias + (Vector512.ShiftRightLogical(hi, 16) & one), 16);
                Vector512.Narrow(lo, hi).CopyTo(destination.Slice(i, 32));
            }
        }
        for (; i < source.Length; i++) destination[i] = FloatToBf16(source[i]);
    }

    /// <summary>destination = source rounded to the nearest BF16 value (ties to even), kept as fp32: the bulk
    /// <c>Bf16ToFloat(FloatToBf16(x))</c> of a BF16 compute copy (finite values and quiet NaNs).</summary>
    public static void RoundToBf16(ReadOnlySpan<float> source, Span<float> destination)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var bias = Vector512.Create(0x7FFFu);
            var one = Vector512.Create(1u);
            var high = Vector512.Create(0xFFFF0000u);
            for (; i + 16 <= source.Length; i += 16)
            {
                var u = Vector512.Create(source.Slice(i, 16)).AsUInt32();
                ((u + bias + (Vector512.ShiftRightLogical(u, 16) & one)) & high).AsSingle().CopyTo(destination.Slice(i, 16));
            }
        }
        for (; i < source.Length; i++) destination[i] = Bf16ToFloat(FloatToBf16(source[i]));
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
                E4M3Fast.DecodeScaled(source, 1f, destination);
                break;
            case DType.F8E5M2:
                MiniFloat.E5M2.DecodeBytes(source, destination);
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
