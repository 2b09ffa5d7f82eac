namespace DeepSeekSharp.Fp8;

/// <summary>FP8 E4M3 codes with one fp32 scale per tile; value ≈ code · scale (the scale is DeepSeek's <c>scale_inv</c>).</summary>
/// <param name="Codes">[rows, cols] E4M3 codes</param>
/// <param name="Scales">[ceil(rows/TileRows), ceil(cols/TileCols)]</param>
public sealed record Fp8Tensor(int Rows, int Cols, int TileRows, int TileCols, byte[] Codes, float[] Scales)
{
    public int ScaleCols => (Cols + TileCols - 1) / TileCols;

    public float[] Dequantize()
    {
        var w = new float[Rows * Cols];
        Fp8Quantizer.Dequantize(this, w);
        return w;
    }
}

/// <summary>
/// Fine-grained quantisation (training.md, FP8): activations per 1×128 tile (one token, 128 channels), weights per
/// 128×128 block, the transposed 128×1 tiling for the weight-gradient GEMM; scale s = amax/448 computed online from
/// the current values (s = 1 when amax = 0), q = E4M3(x / s). Partial edge tiles use the same rule over the
/// elements they have.
/// </summary>
public static class Fp8Quantizer
{
    public const float E4M3Max = 448f;

    public static Fp8Tensor Quantize(ReadOnlySpan<float> x, int rows, int cols, int tileRows, int tileCols, string? name = null)
    {
        if (x.Length != rows * cols) throw new ArgumentException("length does not match rows × cols");
        int tr = (rows + tileRows - 1) / tileRows, tc = (cols + tileCols - 1) / tileCols;
        var scales = new float[tr * tc];
        var codes = new byte[rows * cols];
        for (int bi = 0; bi < tr; bi++)
            for (int bj = 0; bj < tc; bj++)
            {
                int r0 = bi * tileRows, r1 = Math.Min(rows, r0 + tileRows), c0 = bj * tileCols, c1 = Math.Min(cols, c0 + tileCols);
                float amax = 0;
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++)
                    {
                        float v = x[r * cols + c];
                        if (!float.IsFinite(v))
                            throw new DeepSeekSharpException($"{name ?? "tensor"}: value {v} at [{r}, {c}] cannot be quantised to FP8 (NaN/Inf)");
                        amax = Math.Max(amax, Math.Abs(v));
                    }
                float s = amax == 0 ? 1f : amax / E4M3Max;
                scales[bi * tc + bj] = s;
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) codes[r * cols + c] = E4M3Fast.Encode(x[r * cols + c] / s);
            }
        return new Fp8Tensor(rows, cols, tileRows, tileCols, codes, scales);
    }

    /// <summary>Weights: 128×128 blocks.</summary>
    public static Fp8Tensor QuantizeBlocks(ReadOnlySpan<float> w, int rows, int cols, string? name = null) => Quantize(w, rows, cols, 128, 128, name);

    /// <summary>Activations and activation gradients: 1×128 tiles.</summary>
    public static Fp8Tensor QuantizeRowTiles(ReadOnlySpan<float> x, int rows, int cols) => Quantize(x, rows, cols, 1, 128);

    /// <summary>Inputs of the weight-gradient GEMM: 128×1 tiles (along the token dimension).</summary>
    public static Fp8Tensor QuantizeColumnTiles(ReadOnlySpan<float> x, int rows, int cols) => Quantize(x, rows, cols, 128, 1);

    /// <summary>One scale for the whole tensor (the coarse baseline).</summary>
    public static Fp8Tensor QuantizePerTensor(ReadOnlySpan<float> x, int rows, int cols) => Quantize(x, rows, cols, rows, cols);

    public static void Dequantize(Fp8Tensor q, Span<float> destination)
    {
        int tc = q.ScaleCols;
        if (q.TileRows == 1)
        {
            // Row tiles: one scale per 128 consecutive elements of a row.
            for (int r = 0; r < q.Rows; r++)
                for (int bj = 0; bj < tc; bj++)
                {
                    float s = q.Scales[r * tc + bj];
                    int c0 = bj * q.TileCols, c1 = Math.Min(q.Cols, c0 + q.TileCols);
                    for (int c = c0; c < c1; c++) destination[r * q.Cols + c] = E4M3Fast.ToFloat(q.Codes[r * q.Cols + c]) * s;
                }
            return;
        }
        var e4m3 = MiniFloat.E4M3;
        for (int r = 0; r < q.Rows; r++)
        {
            int bi = r / q.TileRows;
            for (int c = 0; c < q.Cols; c++)
                destination[r * q.Cols + c] = e4m3.Decode(q.Codes[r * q.Cols + c]) * q.Scales[bi * tc + c / q.TileCols];
        }
    }
}
