namespace DeepSeekSharp.Fp8;

/// <summary>How partial sums are accumulated in <see cref="Fp8Gemm"/>.</summary>
public enum Fp8Accumulation
{
    /// <summary>DeepSeek-V3: fp32 partial sum per 128-long K chunk, scaled and added to an fp32 accumulator (N_C = 128).</summary>
    PromoteEvery128,
    /// <summary>No promotion: one running accumulator over all of K kept to a limited number of mantissa bits
    /// (truncated after every addition), emulating the tensor cores' ~14-bit accumulation.</summary>
    LimitedPrecision,
}

/// <summary>
/// C[m, n] = A[m, k] · B[n, k]ᵀ with both operands FP8 (E4M3 codes + tile scales), the layout of a Linear's
/// forward (x · Wᵀ). A reference-grade kernel for the error study and tests, not the fast path.
/// </summary>
public static class Fp8Gemm
{
    public static float[] Multiply(Fp8Tensor a, Fp8Tensor b, Fp8Accumulation mode, int accumulatorMantissaBits = 14, bool roundToNearest = false)
    {
        if (a.Cols != b.Cols) throw new ArgumentException("inner dimensions differ");
        int m = a.Rows, n = b.Rows, k = a.Cols;
        var e4m3 = MiniFloat.E4M3;
        var av = new float[a.Codes.Length];
        var bv = new float[b.Codes.Length];
        for (int i = 0; i < av.Length; i++) av[i] = e4m3.Decode(a.Codes[i]);
        for (int i = 0; i < bv.Length; i++) bv[i] = e4m3.Decode(b.Codes[i]);
        var c = new float[m * n];
        int atc = a.ScaleCols, btc = b.ScaleCols;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float acc = 0f;
                for (int p0 = 0; p0 < k; p0 += 128)
                {
                    int p1 = Math.Min(k, p0 + 128);
                    if (mode == Fp8Accumulation.PromoteEvery128)
                    {
                        // Scales are constant within a 128 chunk for 1×128 / 128×128 tilings (and for 128×1 the
                        // chunk follows the tile rows), so they multiply the chunk's raw sum once.
                        float partial = 0f;
                        for (int p = p0; p < p1; p++) partial += av[i * k + p] * bv[j * k + p];
                        acc += partial * ScaleAt(a, i, p0, atc) * ScaleAt(b, j, p0, btc);
                    }
                    else
                    {
                        for (int p = p0; p < p1; p++)
                            acc = KeepBits(acc + av[i * k + p] * ScaleAt(a, i, p, atc) * bv[j * k + p] * ScaleAt(b, j, p, btc), accumulatorMantissaBits, roundToNearest);
                    }
                }
                c[i * n + j] = acc;
            }
        return c;
    }

    private static float ScaleAt(Fp8Tensor t, int row, int col, int scaleCols) => t.Scales[row / t.TileRows * scaleCols + col / t.TileCols];

    /// <summary>Keeps <paramref name="bits"/> significant bits (implicit one included), toward zero or to nearest-even.</summary>
    public static float KeepBits(float v, int bits, bool roundToNearest)
    {
        if (bits >= 24 || v == 0 || !float.IsFinite(v)) return v;
        int drop = 24 - bits;
        uint u = BitConverter.SingleToUInt32Bits(v);
        if (roundToNearest)
        {
            uint half = 1u << (drop - 1), lsb = (u >> drop) & 1;
            u += half - 1 + lsb; // carries into the exponent correctly for IEEE layouts
        }
        return BitConverter.UInt32BitsToSingle(u & ~((1u << drop) - 1));
    }
}
