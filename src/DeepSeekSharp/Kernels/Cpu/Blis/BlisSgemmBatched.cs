namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>Batched SGEMM: many independent products of one shape at fixed strides (attention heads, experts).</summary>
public static unsafe partial class BlisSgemm
{
    /// <summary>Per-GEMM work (multiply-adds) below which a batch is parallelised over its entries, not inside each.</summary>
    private const long SmallBatchEntryWork = 1L << 22;

    /// <summary>
    /// For every i in [0, batchCount): <c>C_i = alpha * op(A_i) · op(B_i) + beta * C_i</c>, with
    /// A_i = a + i·strideA, B_i = b + i·strideB, C_i = c + i·strideC (strides in floats; strideA or strideB may be 0 to
    /// share an operand). Shapes and leading dimensions as in
    /// <see cref="Multiply(WorkerPool?, bool, bool, int, int, int, float, float*, int, float*, int, float, float*, int)"/>.
    /// Parallelises over the batch when entries are small or many, else inside each GEMM.
    /// </summary>
    public static void MultiplyBatched(WorkerPool? pool, int batchCount, bool transA, bool transB, int m, int n, int k,
        float alpha, float* a, int lda, long strideA, float* b, int ldb, long strideB, float beta, float* c, int ldc, long strideC)
    {
        ValidateShape(transA, transB, m, n, k, lda, ldb, ldc);
        ValidateBatch(batchCount, m, n, strideA, strideB, strideC, ldc);
        MultiplyBatchedCore(pool, batchCount, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC);
    }

    /// <summary>Span overload of <see cref="MultiplyBatched(WorkerPool?, int, bool, bool, int, int, int, float, float*, int, long, float*, int, long, float, float*, int, long)"/>; checks lengths once, then pins.</summary>
    public static void MultiplyBatched(WorkerPool? pool, int batchCount, bool transA, bool transB, int m, int n, int k,
        float alpha, ReadOnlySpan<float> a, int lda, long strideA, ReadOnlySpan<float> b, int ldb, long strideB,
        float beta, Span<float> c, int ldc, long strideC)
    {
        ValidateShape(transA, transB, m, n, k, lda, ldb, ldc);
        ValidateBatch(batchCount, m, n, strideA, strideB, strideC, ldc);
        if (batchCount == 0) return;
        long last = batchCount - 1;
        ValidateLengths(transA, transB, m, n, k, ClampLength(a.Length - last * strideA), lda,
            ClampLength(b.Length - last * strideB), ldb, ClampLength(c.Length - last * strideC), ldc);
        fixed (float* pa = a)
        fixed (float* pb = b)
        fixed (float* pc = c)
            MultiplyBatchedCore(pool, batchCount, transA, transB, m, n, k, alpha, pa, lda, strideA, pb, ldb, strideB, beta, pc, ldc, strideC);
    }

    private static int ClampLength(long length) => (int)Math.Clamp(length, -1, int.MaxValue);

    private static void ValidateBatch(int batchCount, int m, int n, long strideA, long strideB, long strideC, int ldc)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batchCount);
        ArgumentOutOfRangeException.ThrowIfNegative(strideA);
        ArgumentOutOfRangeException.ThrowIfNegative(strideB);
        if (batchCount > 1 && m > 0 && n > 0 && strideC < (long)(m - 1) * ldc + n)
            throw new ArgumentException($"strideC {strideC} makes outputs overlap (each C needs {(long)(m - 1) * ldc + n} floats).", nameof(strideC));
    }

    private static void MultiplyBatchedCore(WorkerPool? pool, int batchCount, bool transA, bool transB, int m, int n, int k,
        float alpha, float* a, int lda, long strideA, float* b, int ldb, long strideB, float beta, float* c, int ldc, long strideC)
    {
        if (batchCount == 0) return;
        int threads = pool?.AvailableThreads ?? 1;
        bool overBatch = threads > 1 && batchCount > 1 &&
            ((long)m * n * k < SmallBatchEntryWork || batchCount % threads == 0 || batchCount >= 4 * threads);
        if (overBatch)
        {
            var task = new BatchTask(transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC);
            pool!.Run(batchCount, task);
            return;
        }
        for (int i = 0; i < batchCount; i++)
            MultiplyCore(pool, BlisSgemmKernel.Best, transA, transB, m, n, k, alpha, a + i * strideA, lda, b + i * strideB, ldb, beta, c + i * strideC, ldc);
    }

    private sealed class BatchTask(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, long strideA, float* b, int ldb, long strideB, float beta, float* c, int ldc, long strideC) : IWorkerTask
    {
        public void Execute(int i) =>
            MultiplyCore(null, BlisSgemmKernel.Best, transA, transB, m, n, k, alpha, a + i * strideA, lda, b + i * strideB, ldb, beta, c + i * strideC, ldc);
    }
}
