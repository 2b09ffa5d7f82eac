using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Single-precision GEMM on row-major matrices: <c>C = alpha * op(A) · op(B) + beta * C</c>, where op(X) is X or
/// Xᵀ. Shapes: op(A) (m, k), op(B) (k, n), C (m, n). Transposes are handled while packing, never materialised.
/// beta = 0 never reads C (it may hold NaN). Uses an AVX-512 6×64 micro-kernel, else AVX2/FMA, else scalar.
/// </summary>
public static unsafe partial class BlisSgemm
{
    /// <summary>Problems with m·n·k below this many multiply-adds take the simple direct path.</summary>
    public const long SmallProblemThreshold = 32 * 1024;

    /// <summary>Computes <c>C = alpha * op(A) · op(B) + beta * C</c> on raw pointers.</summary>
    /// <param name="pool">Workers to parallelise over; null runs on the calling thread only.</param>
    /// <param name="transA">If true, <paramref name="a"/> holds Aᵀ: (k, m) with row stride <paramref name="lda"/> ≥ m; else (m, k), lda ≥ k.</param>
    /// <param name="transB">If true, <paramref name="b"/> holds Bᵀ: (n, k) with row stride <paramref name="ldb"/> ≥ k; else (k, n), ldb ≥ n.</param>
    /// <param name="m">Rows of op(A) and of C.</param>
    /// <param name="n">Columns of op(B) and of C.</param>
    /// <param name="k">Columns of op(A) = rows of op(B) (the reduction length).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">A or Aᵀ, row-major.</param>
    /// <param name="lda">Row stride of <paramref name="a"/>, in floats.</param>
    /// <param name="b">B or Bᵀ, row-major.</param>
    /// <param name="ldb">Row stride of <paramref name="b"/>, in floats.</param>
    /// <param name="beta">Scale of the existing C; 0 means C is write-only.</param>
    /// <param name="c">C (m, n), row-major.</param>
    /// <param name="ldc">Row stride of <paramref name="c"/> ≥ n, in floats.</param>
    public static void Multiply(WorkerPool? pool, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        ValidateShape(transA, transB, m, n, k, lda, ldb, ldc);
        MultiplyCore(pool, BlisSgemmKernel.Best, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    /// <summary>Span overload of <see cref="Multiply(WorkerPool?, bool, bool, int, int, int, float, float*, int, float*, int, float, float*, int)"/>; checks lengths once, then pins.</summary>
    public static void Multiply(WorkerPool? pool, bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        ValidateShape(transA, transB, m, n, k, lda, ldb, ldc);
        ValidateLengths(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        fixed (float* pa = a)
        fixed (float* pb = b)
        fixed (float* pc = c)
            MultiplyCore(pool, BlisSgemmKernel.Best, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    }

    /// <summary>
    /// <c>C = alpha · op(A) · B + beta · C</c> with B (k × n) packed whole by <see cref="SgemmBlocked.PackAllB"/>
    /// (<see cref="SgemmPrepacked.PackedBLength"/> floats): the driver skips its packing phase, so one packed weight
    /// serves many products (unchecked; see the backend for checks).
    /// </summary>
    public static void MultiplyPackedB(WorkerPool? pool, bool transA, int m, int n, int k, float alpha, float* a, int lda, float* packedB,
        float beta, float* c, int ldc)
    {
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }
        SgemmBlocked.Multiply(pool, BlisSgemmKernel.Best, transA, false, m, n, k, alpha, a, lda, null, Math.Max(1, n), beta, c, ldc, packedB);
    }

    /// <summary>The unchecked entry point; <paramref name="kernel"/> lets tests force a fallback kernel.</summary>
    internal static void MultiplyCore(WorkerPool? pool, BlisSgemmKernel kernel, bool transA, bool transB, int m, int n, int k,
        float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }
        if ((long)m * n * k < SmallProblemThreshold)
        {
            MultiplySmall(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        SgemmBlocked.Multiply(pool, kernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    /// <summary>Direct path for tiny problems: one float dot product per output element, no packing.</summary>
    [SkipLocalsInit]
    private static void MultiplySmall(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        nint aRow = transA ? 1 : lda, aStep = transA ? lda : 1; // op(A)[i,p] = a[i*aRow + p*aStep]
        nint bCol = transB ? ldb : 1, bStep = transB ? 1 : ldb; // op(B)[p,j] = b[j*bCol + p*bStep]
        for (int i = 0; i < m; i++)
        {
            float* ai = a + i * aRow;
            float* ci = c + (nint)i * ldc;
            for (int j = 0; j < n; j++)
            {
                float* bj = b + j * bCol;
                float sum = 0f;
                for (int p = 0; p < k; p++) sum += ai[p * aStep] * bj[p * bStep];
                ci[j] = beta == 0f ? alpha * sum : alpha * sum + beta * ci[j];
            }
        }
    }

    private static void ScaleC(int m, int n, float beta, float* c, int ldc)
    {
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + (nint)i * ldc, n);
            if (beta == 0f) row.Clear();
            else if (beta != 1f) System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
        }
    }

    private static void ValidateShape(bool transA, bool transB, int m, int n, int k, int lda, int ldb, int ldc)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfLessThan(lda, Math.Max(1, transA ? m : k));
        ArgumentOutOfRangeException.ThrowIfLessThan(ldb, Math.Max(1, transB ? k : n));
        ArgumentOutOfRangeException.ThrowIfLessThan(ldc, Math.Max(1, n));
    }

    private static void ValidateLengths(bool transA, bool transB, int m, int n, int k,
        int aLength, int lda, int bLength, int ldb, int cLength, int ldc)
    {
        if (m == 0 || n == 0) return;
        if (k > 0)
        {
            (int aRows, int aCols) = transA ? (k, m) : (m, k);
            (int bRows, int bCols) = transB ? (n, k) : (k, n);
            if (Required(aRows, aCols, lda) > aLength)
                throw new ArgumentException($"A needs {Required(aRows, aCols, lda)} floats ({aRows}x{aCols}, lda {lda}) but has {aLength}.", "a");
            if (Required(bRows, bCols, ldb) > bLength)
                throw new ArgumentException($"B needs {Required(bRows, bCols, ldb)} floats ({bRows}x{bCols}, ldb {ldb}) but has {bLength}.", "b");
        }
        if (Required(m, n, ldc) > cLength)
            throw new ArgumentException($"C needs {Required(m, n, ldc)} floats ({m}x{n}, ldc {ldc}) but has {cLength}.", "c");
    }

    private static long Required(int rows, int cols, int ld) => (long)(rows - 1) * ld + cols;
}
