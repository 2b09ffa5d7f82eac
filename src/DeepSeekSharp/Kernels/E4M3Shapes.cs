using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Kernels;

/// <summary>The argument checks every backend's <see cref="IBackend.GemmE4M3"/> makes.</summary>
internal static class E4M3Shapes
{
    public static void Check(bool transA, bool transB, int m, int n, int k, Fp8Tensor a, Fp8Tensor b, int cLength, int ldc)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        var (aRows, aCols) = transA ? (k, m) : (m, k);
        if (a.Rows != aRows || a.Cols != aCols) throw new ArgumentException($"fp8 gemm: a is [{a.Rows}, {a.Cols}], expected [{aRows}, {aCols}]");
        var (rows, cols) = transB ? (n, k) : (k, n);
        if (b.Rows != rows || b.Cols != cols) throw new ArgumentException($"fp8 gemm: b is [{b.Rows}, {b.Cols}], expected [{rows}, {cols}]");
        foreach (var q in (ReadOnlySpan<Fp8Tensor>)[a, b])
            if (q.Codes.Length < (long)q.Rows * q.Cols || q.Scales.Length < (long)((q.Rows + q.TileRows - 1) / q.TileRows) * q.ScaleCols)
                throw new ArgumentException("fp8 gemm: codes or scales shorter than the operand's tiling");
        ArgumentOutOfRangeException.ThrowIfLessThan(ldc, Math.Max(1, n));
        if (m > 0 && n > 0 && cLength < (long)(m - 1) * ldc + n) throw new ArgumentException("fp8 gemm: c too small");
    }
}
