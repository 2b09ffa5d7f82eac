using System.Runtime.CompilerServices;
using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// A GEMM operand held as E4M3 codes with one fp32 scale per tileRows × tileCols tile (value = code · scale, the layout
/// of <see cref="Fp8Tensor"/>), row-major [rows, cols] with leading dimension cols.
/// </summary>
internal readonly unsafe struct E4M3Operand(byte* codes, float* scales, int rows, int cols, int tileRows, int tileCols)
{
    public byte* Codes { get; } = codes;
    public float* Scales { get; } = scales;
    public int Rows { get; } = rows;
    public int Cols { get; } = cols;
    public int TileRows { get; } = tileRows;
    public int TileCols { get; } = tileCols;
    private int ScaleCols => (Cols + TileCols - 1) / TileCols;

    /// <summary>dst[0 .. c1−c0) = values of row r, columns [c0, c1) (<see cref="Fp8Quantizer.DequantizeRowRange"/>).</summary>
    public void DecodeRow(int r, int c0, int c1, float* dst) =>
        Fp8Quantizer.DequantizeRowRange(new ReadOnlySpan<byte>(Codes, Rows * Cols), Cols, TileRows, TileCols,
            new ReadOnlySpan<float>(Scales, (Rows + TileRows - 1) / TileRows * ((Cols + TileCols - 1) / TileCols)), r, c0, c1,
            new Span<float>(dst, c1 - c0));
}

/// <summary>
/// Packing straight from E4M3 operands (<see cref="SgemmBlocked.MultiplyE4M3"/>): the values are decoded where the
/// driver copies its operands anyway, so an FP8 GEMM needs no fp32 copy of either input. The per-thread row buffer is
/// used by one packing call at a time (B strips in the packing phase, A blocks in the compute phase).
/// </summary>
internal static unsafe class E4M3Packing
{
    private const int NR = SgemmMicroKernels.NR;

    [ThreadStatic] private static PackBuffer? t_rows;

    /// <summary><see cref="SgemmPacking.PackBStrip"/> for a B held as E4M3 codes (op(B) = Bᵀ when transposed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackBStrip(bool transB, in E4M3Operand b, int j0, int cols, int p0, int kc, float* dst)
    {
        if (!transB)
        {
            // op(B) row p is B's row p: decode it straight into the strip's row.
            for (int p = 0; p < kc; p++)
            {
                float* d = dst + p * NR;
                b.DecodeRow(p0 + p, j0, j0 + cols, d);
                if (cols < NR) new Span<float>(d + cols, NR - cols).Clear();
            }
            return;
        }
        // op(B) column j is B's row j0 + j: decode the strip's rows, then transpose them in as the fp32 packer does.
        float* rows = PackBuffer.Get(ref t_rows, NR * kc);
        for (int j = 0; j < cols; j++) b.DecodeRow(j0 + j, p0, p0 + kc, rows + (nint)j * kc);
        SgemmPacking.PackBStrip(true, rows, kc, 0, cols, 0, kc, dst);
    }

    /// <summary>
    /// <see cref="SgemmPacking.PackATransposed"/> for an E4M3 A stored [k, m] (op(A) = Aᵀ, the weight-gradient GEMM's
    /// output gradient): its depth rows [p0, p0+kc), columns [i0, i0+mc), decoded, then packed as the fp32 packer does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackATransposed(in E4M3Operand a, int i0, int mc, int p0, int kc, float* dst)
    {
        float* rows = PackBuffer.Get(ref t_rows, kc * mc);
        for (int p = 0; p < kc; p++) a.DecodeRow(p0 + p, i0, i0 + mc, rows + (nint)p * mc);
        SgemmPacking.PackATransposed(rows, mc, mc, 0, mc, 0, kc, dst);
    }

    /// <summary>Rows [i0, i0+mc) × depth [p0, p0+kc) of a non-transposed E4M3 A, decoded row-major at stride kc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DecodeABlock(in E4M3Operand a, int i0, int mc, int p0, int kc, float* dst)
    {
        for (int i = 0; i < mc; i++) a.DecodeRow(i0 + i, p0, p0 + kc, dst + (nint)i * kc);
    }
}
