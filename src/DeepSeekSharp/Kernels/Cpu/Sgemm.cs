using System.Buffers;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// The engine's SGEMM entry point, C[m,n] = alpha·op(A)·op(B) + beta·C (row-major). Dense products run on the
/// BLIS-style kernel family in <c>Blis/</c>; this class adds the two cases inference needs: decode-sized products
/// (1–4 rows against a weight) stream the weight rows once instead of packing them, and weights stored compressed
/// (<see cref="CompressedWeight"/>: BF16 or FP8 blocks) are widened row by row (skinny) or once per call (larger m).
/// The path depends on m only through the skinny threshold, so 1- and 2-row calls (decode and speculative
/// verification) give bit-identical rows.
/// </summary>
public static unsafe class Sgemm
{
    public static void Multiply(WorkerPool? pool, bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        if (m <= 0 || n <= 0) return;
        long needA = k == 0 ? 0 : (transA ? (long)(k - 1) * lda + m : (long)(m - 1) * lda + k);
        long needB = k == 0 ? 0 : (transB ? (long)(n - 1) * ldb + k : (long)(k - 1) * ldb + n);
        long needC = (long)(m - 1) * ldc + n;
        if (a.Length < needA || b.Length < needB || c.Length < needC)
            throw new ArgumentException($"sgemm {m}x{n}x{k}: buffers too small (A {a.Length}/{needA}, B {b.Length}/{needB}, C {c.Length}/{needC})");
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            Multiply(pool, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    }

    public static void Multiply(WorkerPool? pool, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        if (m <= 0 || n <= 0) return;
        if (m <= SkinnyRows && transB && !transA)
        {
            MultiplySkinny(pool, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        BlisSgemm.Multiply(pool, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    /// <summary>
    /// Grouped products (<see cref="BlisSgemm.MultiplyGrouped"/>: the experts of an MoE layer) routed like
    /// <see cref="Multiply(WorkerPool?, bool, bool, int, int, int, float, float*, int, float*, int, float, float*, int)"/>:
    /// a group of at most <see cref="SkinnyRows"/> rows against a weight (an expert that got a decoded token or two)
    /// streams its weight, and all other groups go to the grouped driver in one call. Unchecked, like the pointer overload.
    /// </summary>
    public static void MultiplyGrouped(WorkerPool? pool, bool transA, bool transB, float alpha, float beta, ReadOnlySpan<SgemmGroup> groups)
    {
        bool weightLike = transB && !transA;
        int skinny = 0;
        if (weightLike)
            foreach (var g in groups)
                if (IsSkinny(g)) skinny++;
        if (skinny == 0)
        {
            BlisSgemm.MultiplyGroupedCore(pool, BlisSgemmKernel.Best, transA, transB, alpha, beta, groups);
            return;
        }
        var small = ArrayPool<SgemmGroup>.Shared.Rent(skinny);
        var rest = ArrayPool<SgemmGroup>.Shared.Rent(groups.Length - skinny + 1);
        try
        {
            int count = 0, s = 0;
            foreach (var g in groups)
                if (IsSkinny(g)) small[s++] = g;
                else rest[count++] = g;
            // Enough small groups to occupy the workers: one group per task, each streaming on its own core (as experts
            // run one per worker); otherwise each group is split over the workers by rows of its weight.
            int threads = pool?.AvailableThreads ?? 1;
            if (threads > 1 && skinny >= threads)
                pool!.Run(skinny, i =>
                {
                    var g = small[i];
                    MultiplySkinny(null, g.M, g.N, g.K, alpha, g.A, g.Lda, g.B, g.Ldb, beta, g.C, g.Ldc);
                });
            else
                for (int i = 0; i < skinny; i++)
                {
                    var g = small[i];
                    MultiplySkinny(pool, g.M, g.N, g.K, alpha, g.A, g.Lda, g.B, g.Ldb, beta, g.C, g.Ldc);
                }
            BlisSgemm.MultiplyGroupedCore(pool, BlisSgemmKernel.Best, transA, transB, alpha, beta, rest.AsSpan(0, count));
        }
        finally
        {
            ArrayPool<SgemmGroup>.Shared.Return(small);
            ArrayPool<SgemmGroup>.Shared.Return(rest);
        }
    }

    private static bool IsSkinny(in SgemmGroup g) => g.M > 0 && g.M <= SkinnyRows && g.N > 0 && g.BRows == null;

    /// <summary>C = alpha · A · Wᵀ + beta · C for m ≤ <see cref="SkinnyRows"/>: W streamed once, not packed.</summary>
    private static void MultiplySkinny(WorkerPool? pool, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb,
        float beta, float* c, int ldc)
    {
        if (beta != 1f) ScaleC(c, m, n, ldc, beta);
        if (k > 0 && alpha != 0f) SkinnyNT(pool, m, n, k, alpha, a, lda, b, ldb, c, ldc, null);
    }

    /// <summary>C[m,n] = A[m,k] · Wᵀ with W [n,k] stored compressed (BF16 or FP8 blocks).</summary>
    public static void MultiplyCompressedWeight(WorkerPool? pool, int m, ReadOnlySpan<float> a, int lda, CompressedWeight w, Span<float> c, int ldc)
    {
        int n = w.Rows, k = w.Cols;
        if (m <= 0) return;
        if (a.Length < (long)(m - 1) * lda + k || c.Length < (long)(m - 1) * ldc + n) throw new ArgumentException("sgemm (compressed): buffers too small");
        fixed (float* pa = a) fixed (float* pc = c)
        {
            if (m <= SkinnyRows)
            {
                ScaleC(pc, m, n, ldc, 0f);
                SkinnyNT(pool, m, n, k, 1f, pa, lda, null, k, pc, ldc, w);
                return;
            }
            // Prefill: widen once per call (its cost is amortised over the m rows), then the dense kernel.
            float[] wide = ArrayPool<float>.Shared.Rent(n * k);
            try
            {
                for (int r = 0; r < n; r++) w.DecodeRow(r, 0, wide.AsSpan(r * k, k));
                fixed (float* pw = wide) BlisSgemm.Multiply(pool, false, true, m, n, k, 1f, pa, lda, pw, k, 0f, pc, ldc);
            }
            finally { ArrayPool<float>.Shared.Return(wide); }
        }
    }

    /// <summary>Row counts up to which x·Wᵀ streams W directly (GEMV-like) instead of packing it.</summary>
    public const int SkinnyRows = 4;

    /// <summary>C[i, j] += alpha · A_i · W_j for m ≤ 4 rows: one pass over W (decoded row by row when compressed), parallel over W's rows.</summary>
    private static void SkinnyNT(WorkerPool? pool, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float* c, int ldc,
        CompressedWeight? cb)
    {
        nint ia = (nint)a, ib = (nint)b, ic = (nint)c;
        int chunk = Math.Max(16, 65536 / Math.Max(1, k));
        int tasks = (n + chunk - 1) / chunk;
        void Run(int t)
        {
            int j0 = t * chunk, j1 = Math.Min(n, j0 + chunk);
            float[]? row = cb is null ? null : ArrayPool<float>.Shared.Rent(k);
            try
            {
                for (int j = j0; j < j1; j++)
                {
                    ReadOnlySpan<float> w;
                    if (cb is null) w = new ReadOnlySpan<float>((float*)ib + (long)j * ldb, k);
                    else
                    {
                        cb.DecodeRow(j, 0, row.AsSpan(0, k));
                        w = row.AsSpan(0, k);
                    }
                    for (int i = 0; i < m; i++)
                        ((float*)ic)[(long)i * ldc + j] += alpha * System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>((float*)ia + (long)i * lda, k), w);
                }
            }
            finally
            {
                if (row is not null) ArrayPool<float>.Shared.Return(row);
            }
        }
        if (pool is null || tasks == 1) for (int t = 0; t < tasks; t++) Run(t);
        else pool.Run(tasks, Run);
    }

    private static void ScaleC(float* c, int m, int n, int ldc, float beta)
    {
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + (long)i * ldc, n);
            if (beta == 0f) row.Clear();
            else System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
        }
    }
}
