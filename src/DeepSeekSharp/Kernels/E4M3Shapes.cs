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

    /// <summary>The checks of <see cref="IBackend.GroupedGemmE4M3"/> for one group.</summary>
    public static void CheckGroup(bool transB, in E4M3GemmGroup g, int ldc)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(g.M);
        ArgumentOutOfRangeException.ThrowIfNegative(g.N);
        ArgumentOutOfRangeException.ThrowIfNegative(g.K);
        var a = g.A;
        if (a.Cols != g.K || g.ARow < 0 || g.ARow + g.M > a.Rows || g.ARow % a.TileRows != 0)
            throw new ArgumentException($"fp8 grouped gemm: rows [{g.ARow}, {g.ARow + g.M}) × {g.K} of a [{a.Rows}, {a.Cols}] (tile rows {a.TileRows})");
        var (rows, cols) = transB ? (g.N, g.K) : (g.K, g.N);
        if (g.B.Rows != rows || g.B.Cols != cols) throw new ArgumentException($"fp8 grouped gemm: b is [{g.B.Rows}, {g.B.Cols}], expected [{rows}, {cols}]");
        foreach (var q in (ReadOnlySpan<Fp8Tensor>)[a, g.B])
            if (q.Codes.Length < (long)q.Rows * q.Cols || q.Scales.Length < (long)((q.Rows + q.TileRows - 1) / q.TileRows) * q.ScaleCols)
                throw new ArgumentException("fp8 grouped gemm: codes or scales shorter than the operand's tiling");
        ArgumentOutOfRangeException.ThrowIfLessThan(ldc, Math.Max(1, g.N));
        if (g.M > 0 && g.N > 0 && (g.COffset < 0 || g.C.Length - g.COffset < (long)(g.M - 1) * ldc + g.N)) throw new ArgumentException("fp8 grouped gemm: c too small");
    }
}
