using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Tensors;

/// <summary>How an inference weight is stored.</summary>
public enum WeightStorage { Fp32, Bf16, Fp8Block }

/// <summary>
/// A Linear weight [rows, cols] kept compressed in memory for inference (BF16 bits, or E4M3 codes with 128×128
/// block scales) and widened to fp32 only inside the GEMM's packing, so memory-bound decoding reads 2 or 4 times
/// fewer weight bytes. FP8 codes are any <see cref="ReadOnlyMemory{T}"/>: an array (quantised here, or converted on
/// load) or a view of the checkpoint file mapped from disk (<see cref="IO.MappedFile"/>), whose pages the kernel
/// can evict and read again instead of holding them as anonymous memory.
/// </summary>
public sealed class CompressedWeight
{
    private CompressedWeight(WeightStorage storage, int rows, int cols, ReadOnlyMemory<byte> codes, ushort[]? bits, float[]? scales)
    {
        (Storage, Rows, Cols, Codes, Bits, Scales) = (storage, rows, cols, codes, bits, scales);
    }

    public WeightStorage Storage { get; }
    public int Rows { get; }
    public int Cols { get; }
    /// <summary>E4M3 codes [rows, cols], row-major (Fp8Block; empty otherwise).</summary>
    public ReadOnlyMemory<byte> Codes { get; }
    /// <summary>Whether the codes are mapped from a checkpoint file rather than held in memory.</summary>
    public bool IsMapped => IO.MappedFile.IsMapped(Codes);
    /// <summary>BF16 bits [rows, cols] (Bf16).</summary>
    public ushort[]? Bits { get; }
    /// <summary>[ceil(rows/128), ceil(cols/128)] (Fp8Block).</summary>
    public float[]? Scales { get; }

    public int ScaleCols => (Cols + 127) / 128;

    public long Bytes => Storage == WeightStorage.Fp8Block ? Codes.Length + Scales!.LongLength * 4 : Bits!.LongLength * 2;

    public static CompressedWeight FromFp8(Fp8Tensor q)
    {
        if (q.TileRows != 128 || q.TileCols != 128) throw new ArgumentException("FP8 weights must use 128x128 blocks");
        return FromFp8Codes(q.Rows, q.Cols, q.Codes, q.Scales);
    }

    /// <summary>
    /// E4M3 <paramref name="codes"/> [rows, cols] (row-major, as the kernels read them) with 128×128 block
    /// <paramref name="scales"/>, taken as they are (an array or a mapped view; not copied).
    /// </summary>
    public static CompressedWeight FromFp8Codes(int rows, int cols, ReadOnlyMemory<byte> codes, float[] scales)
    {
        // Quantiser output may sit in pooled arrays longer than the weight: the codes are cut to it.
        if (codes.Length < (long)rows * cols) throw new ArgumentException($"{codes.Length} FP8 codes for a [{rows}, {cols}] weight");
        if (scales.Length < (long)((rows + 127) / 128) * ((cols + 127) / 128)) throw new ArgumentException($"{scales.Length} scales for a [{rows}, {cols}] weight in 128x128 blocks");
        return new CompressedWeight(WeightStorage.Fp8Block, rows, cols, codes[..(rows * cols)], null, scales);
    }

    public static CompressedWeight Compress(ReadOnlySpan<float> w, int rows, int cols, WeightStorage storage)
    {
        if (storage == WeightStorage.Fp8Block) return FromFp8(Fp8Quantizer.QuantizeBlocks(w, rows, cols));
        if (storage != WeightStorage.Bf16) throw new ArgumentException("fp32 weights are not compressed");
        var bits = new ushort[w.Length];
        for (int i = 0; i < bits.Length; i++) bits[i] = NumericFormats.FloatToBf16(w[i]);
        return new CompressedWeight(WeightStorage.Bf16, rows, cols, default, bits, null);
    }

    /// <summary>Widens row <paramref name="row"/>, columns [col, col+count), to fp32.</summary>
    public void DecodeRow(int row, int col, Span<float> destination)
    {
        int count = destination.Length;
        if (Storage == WeightStorage.Bf16)
        {
            var src = Bits.AsSpan(row * Cols + col, count);
            for (int i = 0; i < count; i++) destination[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
            return;
        }
        var codes = Codes.Span.Slice(row * Cols + col, count);
        int sb = row / 128 * ScaleCols;
        for (int i = 0; i < count;)
        {
            int c = col + i;
            float s = Scales![sb + c / 128];
            int end = Math.Min(count, i + (128 - c % 128));
            E4M3Fast.DecodeScaled(codes[i..end], s, destination[i..end]);
            i = end;
        }
    }

    public float[] Decompress()
    {
        var w = new float[Rows * Cols];
        for (int r = 0; r < Rows; r++) DecodeRow(r, 0, w.AsSpan(r * Cols, Cols));
        return w;
    }
}
