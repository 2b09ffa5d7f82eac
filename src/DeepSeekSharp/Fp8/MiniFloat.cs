namespace DeepSeekSharp.Fp8;

/// <summary>
/// A small floating-point format (sign, <see cref="ExponentBits"/>, <see cref="MantissaBits"/>): E4M3 (OCP E4M3FN:
/// bias 7, no infinities, S.1111.111 = NaN, max 448), E5M2 (IEEE-like: bias 15, inf/NaN, max 57344) and E5M6 (the
/// finer 12-bit format DeepSeek-V3 caches o_proj inputs in; IEEE-like). Encoding rounds to nearest, ties to even,
/// and saturates: finite values (and infinities) beyond the largest finite value become ±max; NaN stays NaN.
/// </summary>
public sealed class MiniFloat
{
    public static readonly MiniFloat E4M3 = new("E4M3", 4, 3, 7, ieeeSpecials: false);
    public static readonly MiniFloat E5M2 = new("E5M2", 5, 2, 15, ieeeSpecials: true);
    public static readonly MiniFloat E5M6 = new("E5M6", 5, 6, 15, ieeeSpecials: true);

    private readonly float[] _decode;

    private MiniFloat(string name, int exponentBits, int mantissaBits, int bias, bool ieeeSpecials)
    {
        Name = name;
        ExponentBits = exponentBits;
        MantissaBits = mantissaBits;
        Bias = bias;
        IeeeSpecials = ieeeSpecials;
        Bits = 1 + exponentBits + mantissaBits;
        _decode = new float[1 << Bits];
        for (int c = 0; c < _decode.Length; c++) _decode[c] = DecodeByDefinition(c);
        // Largest finite: top exponent minus one (IEEE) or top exponent with mantissa 110 (E4M3FN).
        MaxCode = ieeeSpecials ? (((1 << exponentBits) - 2) << mantissaBits) | ((1 << mantissaBits) - 1)
                               : (((1 << exponentBits) - 1) << mantissaBits) | ((1 << mantissaBits) - 2);
        MaxFinite = _decode[MaxCode];
        NaNCode = ieeeSpecials ? (((1 << exponentBits) - 1) << mantissaBits) | 1 : (1 << (exponentBits + mantissaBits)) - 1;
    }

    public string Name { get; }
    public int ExponentBits { get; }
    public int MantissaBits { get; }
    public int Bias { get; }
    public bool IeeeSpecials { get; }
    public int Bits { get; }
    public int MaxCode { get; }
    public float MaxFinite { get; }
    public int NaNCode { get; }

    /// <summary>The value of <paramref name="code"/> (a table built from <see cref="DecodeByDefinition"/>).</summary>
    public float Decode(int code) => _decode[code];

    public float DecodeByDefinition(int code)
    {
        int sign = code >> (ExponentBits + MantissaBits) & 1;
        int exp = (code >> MantissaBits) & ((1 << ExponentBits) - 1);
        int man = code & ((1 << MantissaBits) - 1);
        int top = (1 << ExponentBits) - 1;
        double v;
        if (IeeeSpecials && exp == top) v = man == 0 ? double.PositiveInfinity : double.NaN;
        else if (!IeeeSpecials && exp == top && man == (1 << MantissaBits) - 1) v = double.NaN;
        else if (exp == 0) v = Math.ScaleB(man, 1 - Bias - MantissaBits);
        else v = Math.ScaleB((1 << MantissaBits) + man, exp - Bias - MantissaBits);
        return (float)(sign == 1 ? -v : v);
    }

    /// <summary>Nearest code (ties to even mantissa), saturating at ±<see cref="MaxFinite"/>.</summary>
    public int Encode(float value)
    {
        int signBit = 1 << (ExponentBits + MantissaBits);
        if (float.IsNaN(value)) return NaNCode;
        int sign = BitConverter.SingleToInt32Bits(value) < 0 ? signBit : 0;
        double a = Math.Abs((double)value);
        if (a >= MaxFinite) return sign | MaxCode;
        int minExp = 1 - Bias;
        // Quantum: 2^(e − m) for the binade of a, never below the subnormal quantum 2^(minExp − m).
        int e = a == 0 ? minExp : Math.Max(minExp, Math.ILogB(a));
        double quantum = Math.ScaleB(1.0, e - MantissaBits);
        double q = Math.Round(a / quantum, MidpointRounding.ToEven); // exact: a/quantum is a power-of-two scaling
        // q counts quanta: below 2^m it is a subnormal mantissa (e = minExp), else 2^m + mantissa (may carry into e+1).
        if (e == minExp && q < (1 << MantissaBits)) return sign | (int)q;
        if (q >= 2 << MantissaBits) { q /= 2; e++; }
        int code = ((e + Bias) << MantissaBits) | ((int)q - (1 << MantissaBits));
        return sign | Math.Min(code, MaxCode);
    }

    public void DecodeBytes(ReadOnlySpan<byte> codes, Span<float> values)
    {
        for (int i = 0; i < codes.Length; i++) values[i] = _decode[codes[i]];
    }
}
