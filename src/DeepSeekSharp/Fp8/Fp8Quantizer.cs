using DeepSeekSharp.Tensors;
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
        var q = Allocate(rows, cols, tileRows, tileCols);
        QuantizeBands(x, rows, cols, tileRows, tileCols, 0, (rows + tileRows - 1) / tileRows, q.Codes, q.Scales, [], name);
        return q;
    }

    /// <summary>
    /// Like <see cref="Allocate"/> with codes and scales rented from <see cref="StoragePool"/> (both may be longer
    /// than the tiling needs): for the FP8 caches an op keeps from its forward to its backward, which hands them back
    /// with <see cref="Return"/>. Renting avoids touching fresh pages for every activation of every step.
    /// </summary>
    public static Fp8Tensor Rent(int rows, int cols, int tileRows, int tileCols) =>
        new(rows, cols, tileRows, tileCols, StoragePool.RentBytes(rows * cols),
            StoragePool.Rent(((rows + tileRows - 1) / tileRows) * ((cols + tileCols - 1) / tileCols)));

    /// <summary>Hands codes and scales of a <see cref="Rent"/>ed tensor back to the pool; the tensor must not be used afterwards.</summary>
    public static void Return(Fp8Tensor q)
    {
        StoragePool.ReturnBytes(q.Codes);
        StoragePool.Return(q.Scales);
    }

    /// <summary>An uninitialised quantised tensor of the given tiling (filled by <see cref="QuantizeBands"/>).</summary>
    public static Fp8Tensor Allocate(int rows, int cols, int tileRows, int tileCols) =>
        new(rows, cols, tileRows, tileCols, GC.AllocateUninitializedArray<byte>(rows * cols),
            new float[((rows + tileRows - 1) / tileRows) * ((cols + tileCols - 1) / tileCols)]);

    /// <summary>
    /// Quantises the bands of tile rows [<paramref name="bandStart"/>, <paramref name="bandEnd"/>) of x [rows, cols]:
    /// writes the scales of those bands, the codes (unless <paramref name="codes"/> is empty) and the dequantised
    /// values code · scale (unless <paramref name="dequantized"/> is empty; the "fake-quantised" input of an FP8 GEMM).
    /// Bands are independent, so backends run them in parallel.
    /// </summary>
    public static void QuantizeBands(ReadOnlySpan<float> x, int rows, int cols, int tileRows, int tileCols, int bandStart, int bandEnd,
        Span<byte> codes, Span<float> scales, Span<float> dequantized, string? name = null)
    {
        int tc = (cols + tileCols - 1) / tileCols;
        var pool = System.Buffers.ArrayPool<float>.Shared;
        float[] amaxBuffer = pool.Rent(cols), scaleBuffer = pool.Rent(cols);
        try
        {
            // Per-column running amax of the current band of tile rows (vectorised over the row).
            var amax = amaxBuffer.AsSpan(0, cols);
            var colScale = scaleBuffer.AsSpan(0, cols);
            for (int bi = bandStart; bi < bandEnd; bi++)
            {
                int r0 = bi * tileRows, r1 = Math.Min(rows, r0 + tileRows);
                if (r1 - r0 == 1) x.Slice(r0 * cols, cols).CopyTo(amax);
                else
                {
                    amax.Clear();
                    for (int r = r0; r < r1; r++) TensorPrimitives.MaxMagnitude(x.Slice(r * cols, cols), amax, amax);
                }
                for (int bj = 0; bj < tc; bj++)
                {
                    int c0 = bj * tileCols, c1 = Math.Min(cols, c0 + tileCols);
                    float m = c1 - c0 == 1 ? amax[c0] : TensorPrimitives.MaxMagnitude(amax.Slice(c0, c1 - c0));
                    if (!float.IsFinite(m)) throw new DeepSeekSharpException($"{name ?? "tensor"}: NaN/Inf in rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1} cannot be quantised to FP8");
                    float s = m == 0 ? 1f : Math.Abs(m) / E4M3Max;
                    scales[bi * tc + bj] = s;
                    if (c1 - c0 == 1) colScale[c0] = s;
                    else colScale.Slice(c0, c1 - c0).Fill(s);
                }
                // x / s in float32 (a true division, as the reference quantiser does), then the bit-level encoder.
                for (int r = r0; r < r1; r++)
                    E4M3Fast.EncodeDivided(x.Slice(r * cols, cols), colScale,
                        codes.IsEmpty ? [] : codes.Slice(r * cols, cols), dequantized.IsEmpty ? [] : dequantized.Slice(r * cols, cols));
            }
        }
        finally
        {
            pool.Return(amaxBuffer);
            pool.Return(scaleBuffer);
        }
    }

    /// <summary>Weights: 128×128 blocks.</summary>
    public static Fp8Tensor QuantizeBlocks(ReadOnlySpan<float> w, int rows, int cols, string? name = null) => Quantize(w, rows, cols, 128, 128, name);

    /// <summary>Activations and activation gradients: 1×128 tiles.</summary>
    public static Fp8Tensor QuantizeRowTiles(ReadOnlySpan<float> x, int rows, int cols) => Quantize(x, rows, cols, 1, 128);

    /// <summary>Inputs of the weight-gradient GEMM: 128×1 tiles (along the token dimension).</summary>
    public static Fp8Tensor QuantizeColumnTiles(ReadOnlySpan<float> x, int rows, int cols) => Quantize(x, rows, cols, 128, 1);

    /// <summary>One scale for the whole tensor (the coarse baseline).</summary>
    public static Fp8Tensor QuantizePerTensor(ReadOnlySpan<float> x, int rows, int cols) => Quantize(x, rows, cols, rows, cols);

    /// <summary>Dequantises on a backend (in parallel on the CPU).</summary>
    public static void Dequantize(DeepSeekSharp.Kernels.IBackend backend, Fp8Tensor q, Span<float> destination) =>
        backend.DequantizeE4M3(q.Codes, q.Rows, q.Cols, q.TileRows, q.TileCols, q.Scales, destination);

    public static void Dequantize(Fp8Tensor q, Span<float> destination) =>
        DequantizeRows(q.Codes, q.Rows, q.Cols, q.TileRows, q.TileCols, q.Scales, destination, 0, q.Rows);

    /// <summary>values = code · tile scale for rows [<paramref name="rowStart"/>, <paramref name="rowEnd"/>) (one vector pass per tile).</summary>
    public static void DequantizeRows(ReadOnlySpan<byte> codes, int rows, int cols, int tileRows, int tileCols, ReadOnlySpan<float> scales,
        Span<float> destination, int rowStart, int rowEnd)
    {
        for (int r = rowStart; r < rowEnd; r++)
            DequantizeRowRange(codes, cols, tileRows, tileCols, scales, r, 0, cols, destination.Slice(r * cols, cols));
    }

    /// <summary>
    /// destination[0 .. c1−c0) = code · tile scale of row <paramref name="r"/>, columns [c0, c1), of codes [rows, cols]:
    /// one vector pass per tile (the FP8 GEMM decodes its operands' blocks with this while packing).
    /// </summary>
    public static void DequantizeRowRange(ReadOnlySpan<byte> codes, int cols, int tileRows, int tileCols, ReadOnlySpan<float> scales,
        int r, int c0, int c1, Span<float> destination)
    {
        var scaleRow = scales.Slice(r / tileRows * ((cols + tileCols - 1) / tileCols));
        var row = codes.Slice(r * cols, cols);
        if (tileCols == 1)
        {
            // 128×1 tiles: one scale per column within a band of rows.
            var dst = destination[..(c1 - c0)];
            E4M3Fast.DecodeScaled(row[c0..c1], 1f, dst);
            TensorPrimitives.Multiply(dst, scaleRow[c0..c1], dst);
            return;
        }
        for (int c = c0; c < c1;)
        {
            int end = Math.Min(c1, (c / tileCols + 1) * tileCols);
            E4M3Fast.DecodeScaled(row[c..end], scaleRow[c / tileCols], destination.Slice(c - c0, end - c));
            c = end;
        }
    }
}
