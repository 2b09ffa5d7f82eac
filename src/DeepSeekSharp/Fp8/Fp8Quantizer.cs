using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

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
        // Per-column running amax of the current band of tile rows (vectorised over the row).
        var amax = new float[cols];
        var colScale = new float[cols];
        var scaled = new float[cols];
        for (int bi = 0; bi < tr; bi++)
        {
            int r0 = bi * tileRows, r1 = Math.Min(rows, r0 + tileRows);
            Array.Clear(amax);
            for (int r = r0; r < r1; r++) TensorPrimitives.MaxMagnitude(x.Slice(r * cols, cols), amax, amax);
            for (int bj = 0; bj < tc; bj++)
            {
                int c0 = bj * tileCols, c1 = Math.Min(cols, c0 + tileCols);
                float m = TensorPrimitives.MaxMagnitude(amax.AsSpan(c0, c1 - c0));
                if (!float.IsFinite(m)) throw new DeepSeekSharpException($"{name ?? "tensor"}: NaN/Inf in rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1} cannot be quantised to FP8");
                float s = m == 0 ? 1f : Math.Abs(m) / E4M3Max;
                scales[bi * tc + bj] = s;
                colScale.AsSpan(c0, c1 - c0).Fill(s);
            }
            for (int r = r0; r < r1; r++)
            {
                // x / s in float32 (a true division, as the reference quantiser does), then the bit-level encoder.
                TensorPrimitives.Divide(x.Slice(r * cols, cols), colScale, scaled);
                var dst = codes.AsSpan(r * cols, cols);
                for (int c = 0; c < cols; c++) dst[c] = E4M3Fast.Encode(scaled[c]);
            }
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
        Span<float> rowScales = q.Cols <= 4096 ? stackalloc float[q.Cols] : new float[q.Cols];
        for (int r = 0; r < q.Rows; r++)
        {
            if (r % q.TileRows == 0 || r == 0)
            {
                int bi = r / q.TileRows;
                for (int bj = 0; bj < tc; bj++)
                {
                    int c0 = bj * q.TileCols, c1 = Math.Min(q.Cols, c0 + q.TileCols);
                    rowScales[c0..c1].Fill(q.Scales[bi * tc + bj]);
                }
            }
            var dst = destination.Slice(r * q.Cols, q.Cols);
            var src = q.Codes.AsSpan(r * q.Cols, q.Cols);
            E4M3Fast.DecodeScaled(src, 1f, dst);
            TensorPrimitives.Multiply(dst, rowScales, dst);
        }
    }
}
