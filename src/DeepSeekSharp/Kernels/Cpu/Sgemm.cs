using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Row-major SGEMM, C[m,n] = alpha·op(A)·op(B) + beta·C, BLIS-style: B is packed into 64-column strips of KC rows,
/// A into 6-row strips (alpha folded in), and a 6×64 AVX-512 micro-kernel keeps 24 accumulators in registers.
/// Transposes are absorbed by the packing routines (no materialised transposes). Threads split the packed B strips
/// (wide problems) or the row blocks (narrow ones). beta = 0 never reads C.
/// </summary>
public static unsafe class Sgemm
{
    public const int MR = 6, NR = 64, KC = 384, MC = 96, NC = 2048;

    [ThreadStatic] private static float[]? _localPackA;
    [ThreadStatic] private static float[]? _edge;
    [ThreadStatic] private static float[]? _localPackB;
    private static readonly object PackGate = new();
    private static readonly float[] SharedPackB = new float[KC * NC];
    private static float[]? _sharedPackA;

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

    /// <summary>C[m,n] = A[m,k] · Wᵀ with W [n,k] stored compressed (BF16 or FP8 blocks), widened while packing.</summary>
    public static void MultiplyCompressedWeight(WorkerPool? pool, int m, ReadOnlySpan<float> a, int lda, DeepSeekSharp.Tensors.CompressedWeight w, Span<float> c, int ldc)
    {
        int n = w.Rows, k = w.Cols;
        if (a.Length < (long)(m - 1) * lda + k || c.Length < (long)(m - 1) * ldc + n) throw new ArgumentException("sgemm (compressed): buffers too small");
        fixed (float* pa = a) fixed (float* pc = c)
            Core(pool, false, true, m, n, k, 1f, pa, lda, null, k, 0f, pc, ldc, w);
    }

    public static void Multiply(WorkerPool? pool, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc) =>
        Core(pool, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, null);

    /// <summary>The driver; <paramref name="cb"/> replaces B (transposed) when the weight is stored compressed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Core(WorkerPool? pool, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, DeepSeekSharp.Tensors.CompressedWeight? cb)
    {
        if (m <= 0 || n <= 0) return;
        if (cb is null && !(m <= SkinnyRows && transB && !transA))
        {
            // Dense products go to the BLIS-style kernel family (Blis/): in-place A, parallel B packing, tuned blocking.
            BlisSgemm.Multiply(pool, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        if (beta != 1f) ScaleC(c, m, n, ldc, beta);
        if (k <= 0 || alpha == 0f) return;
        if (m <= SkinnyRows && transB && !transA)
        {
            // Decode-sized products (1-4 rows against a weight): read each weight row once, never pack it.
            SkinnyNT(pool, m, n, k, alpha, a, lda, b, ldb, c, ldc, cb);
            return;
        }
        // The path depends on n·k only, so a row gets bit-identical results whatever m is (decode vs verify).
        if ((long)n * k < 4096 || !Avx512F.IsSupported)
        {
            if (cb is not null)
            {
                var wide = cb.Decompress();
                fixed (float* pw = wide) Direct(transA, transB, m, n, k, alpha, a, lda, pw, ldb, c, ldc);
            }
            else Direct(transA, transB, m, n, k, alpha, a, lda, b, ldb, c, ldc);
            return;
        }
        int threads = pool?.ThreadCount ?? 1;
        // A pooled call packs A and B into buffers all workers read; single-threaded calls (e.g. from inside
        // attention tasks) use per-thread buffers, so concurrent callers never share or allocate them.
        bool shared = pool is not null && threads > 1 && Monitor.TryEnter(PackGate);
        if (!shared) pool = null;
        try
        {
            int mPadded = (m + MR - 1) / MR * MR;
            float[] packB = shared ? SharedPackB : (_localPackB ??= new float[KC * NC]);
            ref float[]? aBuffer = ref shared ? ref _sharedPackA : ref _localPackA;
            if (aBuffer is null || aBuffer.Length < (long)mPadded * KC) aBuffer = new float[(long)mPadded * KC];
            float[] packA = aBuffer;
            fixed (float* pB = packB) fixed (float* pA = packA)
            {
                nint ia = (nint)a, ib = (nint)b, ic = (nint)c, ipa = (nint)pA, ipb = (nint)pB;
                int aStrips = mPadded / MR;
                for (int jc = 0; jc < n; jc += NC)
                {
                    int nc = Math.Min(NC, n - jc);
                    int strips = (nc + NR - 1) / NR;
                    for (int pc = 0; pc < k; pc += KC)
                    {
                        int kc = Math.Min(KC, k - pc);
                        if (pool is null)
                        {
                            PackB(transB, b, ldb, pc, kc, jc, nc, 0, strips, pB, cb);
                            PackA(transA, a, lda, alpha, 0, m, pc, kc, pA);
                            Compute(0, m, 0, strips, kc, jc, nc, pA, pB, c, ldc);
                            continue;
                        }
                        // Pack both operands in parallel (B strips and A row strips as one task list).
                        int packTasks = strips + (aStrips + 7) / 8;
                        pool.Run(packTasks, t =>
                        {
                            if (t < strips) PackB(transB, (float*)ib, ldb, pc, kc, jc, nc, t, t + 1, (float*)ipb, cb);
                            else
                            {
                                int s0 = (t - strips) * 8, s1 = Math.Min(aStrips, s0 + 8);
                                PackA(transA, (float*)ia, lda, alpha, s0 * MR, Math.Min(m, s1 * MR) - s0 * MR, pc, kc, (float*)ipa + (long)s0 * MR * kc);
                            }
                        });
                        // A 2-D grid of (row block × strip group) tasks keeps both cores busy on tall and wide shapes.
                        int mBlocks = (m + MC - 1) / MC;
                        int groups = Math.Max(1, Math.Min(strips, (threads * 4 + mBlocks - 1) / mBlocks));
                        pool.Run(mBlocks * groups, t =>
                        {
                            int mb = t / groups, g = t % groups;
                            int r0 = mb * MC, r1 = Math.Min(m, r0 + MC);
                            Compute(r0, r1, strips * g / groups, strips * (g + 1) / groups, kc, jc, nc, (float*)ipa, (float*)ipb, (float*)ic, ldc);
                        });
                    }
                }
            }
        }
        finally
        {
            if (shared) Monitor.Exit(PackGate);
        }
    }

    /// <summary>C rows [r0, r1) × strips [s0, s1) += packed A · packed B (one K block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Compute(int r0, int r1, int s0, int s1, int kc, int jc, int nc, float* packA, float* packB, float* c, int ldc)
    {
        var edge = _edge ??= new float[MR * NR];
        fixed (float* pE = edge)
        {
            for (int s = s0; s < s1; s++)
            {
                int j0 = jc + s * NR, w = Math.Min(NR, jc + nc - j0);
                float* bp = packB + (long)s * kc * NR;
                for (int i = r0; i < r1; i += MR)
                {
                    int h = Math.Min(MR, r1 - i);
                    float* ap = packA + (long)i * kc;
                    float* cp = c + (long)i * ldc + j0;
                    if (h == MR && w == NR) Kernel6x64(ap, bp, kc, cp, ldc);
                    else
                    {
                        new Span<float>(pE, MR * NR).Clear();
                        Kernel6x64(ap, bp, kc, pE, NR);
                        for (int r = 0; r < h; r++)
                            for (int j = 0; j < w; j++) cp[(long)r * ldc + j] += pE[r * NR + j];
                    }
                }
            }
        }
    }

    /// <summary>Row counts up to which x·Wᵀ streams W directly (GEMV-like) instead of packing it.</summary>
    public const int SkinnyRows = 4;

    /// <summary>C[i, j] += alpha · A_i · W_j for m ≤ 4 rows: one pass over W (decoded row by row when compressed), parallel over W's rows.</summary>
    private static void SkinnyNT(WorkerPool? pool, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float* c, int ldc,
        DeepSeekSharp.Tensors.CompressedWeight? cb)
    {
        nint ia = (nint)a, ib = (nint)b, ic = (nint)c;
        int chunk = Math.Max(16, 65536 / Math.Max(1, k));
        int tasks = (n + chunk - 1) / chunk;
        void Run(int t)
        {
            int j0 = t * chunk, j1 = Math.Min(n, j0 + chunk);
            float[]? row = cb is null ? null : System.Buffers.ArrayPool<float>.Shared.Rent(k);
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
                if (row is not null) System.Buffers.ArrayPool<float>.Shared.Return(row);
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

    /// <summary>Packs B[pc:pc+kc, jc + 64·s ...] into strips: strip s holds kc rows of 64 floats (zero-padded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB(bool transB, float* b, int ldb, int pc, int kc, int jc, int nc, int s0, int s1, float* dst,
        DeepSeekSharp.Tensors.CompressedWeight? cb = null)
    {
        if (cb is not null)
        {
            PackCompressedB(cb, pc, kc, jc, nc, s0, s1, dst);
            return;
        }
        for (int s = s0; s < s1; s++)
        {
            int j0 = jc + s * NR, w = Math.Min(NR, jc + nc - j0);
            float* d = dst + (long)s * kc * NR;
            if (!transB)
            {
                for (int p = 0; p < kc; p++)
                {
                    float* src = b + (long)(pc + p) * ldb + j0;
                    float* row = d + p * NR;
                    if (w == NR)
                    {
                        Vector512.Store(Vector512.Load(src), row);
                        Vector512.Store(Vector512.Load(src + 16), row + 16);
                        Vector512.Store(Vector512.Load(src + 32), row + 32);
                        Vector512.Store(Vector512.Load(src + 48), row + 48);
                    }
                    else
                    {
                        int j = 0;
                        for (; j < w; j++) row[j] = src[j];
                        for (; j < NR; j++) row[j] = 0f;
                    }
                }
            }
            else
            {
                for (int j = 0; j < w; j++)
                {
                    float* src = b + (long)(j0 + j) * ldb + pc;
                    for (int p = 0; p < kc; p++) d[p * NR + j] = src[p];
                }
                for (int j = w; j < NR; j++)
                    for (int p = 0; p < kc; p++) d[p * NR + j] = 0f;
            }
        }
    }

    /// <summary>Packs rows of a compressed W (Bᵀ) into 64-wide strips, widening BF16/FP8 to fp32 on the way.</summary>
    private static void PackCompressedB(DeepSeekSharp.Tensors.CompressedWeight w, int pc, int kc, int jc, int nc, int s0, int s1, float* dst)
    {
        Span<float> row = stackalloc float[KC];
        for (int s = s0; s < s1; s++)
        {
            int j0 = jc + s * NR, width = Math.Min(NR, jc + nc - j0);
            float* d = dst + (long)s * kc * NR;
            for (int j = 0; j < width; j++)
            {
                w.DecodeRow(j0 + j, pc, row[..kc]);
                for (int p = 0; p < kc; p++) d[p * NR + j] = row[p];
            }
            for (int j = width; j < NR; j++)
                for (int p = 0; p < kc; p++) d[p * NR + j] = 0f;
        }
    }

    /// <summary>Packs alpha·op(A)[i0:i0+mc, pc:pc+kc] into 6-row strips (p-major within a strip, zero-padded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA(bool transA, float* a, int lda, float alpha, int i0, int mc, int pc, int kc, float* dst)
    {
        for (int r0 = 0; r0 < mc; r0 += MR)
        {
            int h = Math.Min(MR, mc - r0);
            float* d = dst + (long)r0 * kc;
            if (!transA)
            {
                for (int r = 0; r < MR; r++)
                {
                    if (r >= h)
                    {
                        for (int p = 0; p < kc; p++) d[p * MR + r] = 0f;
                        continue;
                    }
                    float* src = a + (long)(i0 + r0 + r) * lda + pc;
                    for (int p = 0; p < kc; p++) d[p * MR + r] = alpha * src[p];
                }
            }
            else
            {
                for (int p = 0; p < kc; p++)
                {
                    float* src = a + (long)(pc + p) * lda + i0 + r0;
                    int r = 0;
                    for (; r < h; r++) d[p * MR + r] = alpha * src[r];
                    for (; r < MR; r++) d[p * MR + r] = 0f;
                }
            }
        }
    }

    /// <summary>C[6, 64] += Apack[kc, 6] · Bpack[kc, 64]: 24 zmm accumulators, 4 B loads and 1 broadcast per row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.AggressiveInlining)]
    private static void Kernel6x64(float* a, float* b, int kc, float* c, int ldc)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b); var b1 = Vector512.Load(b + 16); var b2 = Vector512.Load(b + 32); var b3 = Vector512.Load(b + 48);
            var x = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01); c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11); c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21); c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31); c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
            x = Vector512.Create(a[4]);
            c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41); c42 = Avx512F.FusedMultiplyAdd(x, b2, c42); c43 = Avx512F.FusedMultiplyAdd(x, b3, c43);
            x = Vector512.Create(a[5]);
            c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51); c52 = Avx512F.FusedMultiplyAdd(x, b2, c52); c53 = Avx512F.FusedMultiplyAdd(x, b3, c53);
            a += MR;
            b += NR;
        }
        AddRow(c, c00, c01, c02, c03);
        AddRow(c + ldc, c10, c11, c12, c13);
        AddRow(c + 2 * ldc, c20, c21, c22, c23);
        AddRow(c + 3 * ldc, c30, c31, c32, c33);
        AddRow(c + 4 * ldc, c40, c41, c42, c43);
        AddRow(c + 5 * ldc, c50, c51, c52, c53);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3)
    {
        Vector512.Store(Vector512.Load(c) + v0, c);
        Vector512.Store(Vector512.Load(c + 16) + v1, c + 16);
        Vector512.Store(Vector512.Load(c + 32) + v2, c + 32);
        Vector512.Store(Vector512.Load(c + 48) + v3, c + 48);
    }

    /// <summary>Small problems and machines without AVX-512: a vectorised row-by-row product (C already scaled by beta).</summary>
    private static void Direct(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float* c, int ldc)
    {
        Span<float> rowA = k <= 4096 ? stackalloc float[k] : new float[k];
        for (int i = 0; i < m; i++)
        {
            var crow = new Span<float>(c + (long)i * ldc, n);
            for (int p = 0; p < k; p++) rowA[p] = alpha * (transA ? a[(long)p * lda + i] : a[(long)i * lda + p]);
            if (transB)
            {
                for (int j = 0; j < n; j++)
                    crow[j] += System.Numerics.Tensors.TensorPrimitives.Dot(rowA, new ReadOnlySpan<float>(b + (long)j * ldb, k));
            }
            else
            {
                for (int p = 0; p < k; p++)
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(b + (long)p * ldb, n), rowA[p], crow, crow);
            }
        }
    }
}
