using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>Row-major SGEMM (vectorised, row-parallel).</summary>
public static class Sgemm
{
    public static void Multiply(int threads, bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        unsafe
        {
            fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            {
                nint ia = (nint)pa, ib = (nint)pb, ic = (nint)pc;
                CpuParallel.ForRanges(m, Math.Max(1, 16384 / Math.Max(1, n * Math.Max(1, k / 16))), threads, (start, end) =>
                {
                    float* A = (float*)ia, B = (float*)ib, C = (float*)ic;
                    float[] rowA = new float[k];
                    for (int i = start; i < end; i++)
                    {
                        var crow = new Span<float>(C + (long)i * ldc, n);
                        if (beta == 0) crow.Clear(); else if (beta != 1) TensorPrimitives.Multiply(crow, beta, crow);
                        for (int p = 0; p < k; p++) rowA[p] = alpha * (transA ? A[(long)p * lda + i] : A[(long)i * lda + p]);
                        if (transB)
                        {
                            for (int j = 0; j < n; j++)
                                crow[j] += TensorPrimitives.Dot(rowA, new ReadOnlySpan<float>(B + (long)j * ldb, k));
                        }
                        else
                        {
                            for (int p = 0; p < k; p++)
                                if (rowA[p] != 0) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(B + (long)p * ldb, n), rowA[p], crow, crow);
                        }
                    }
                });
            }
        }
    }
}
