using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>Which micro-kernel the blocked SGEMM uses; <see cref="Best"/> picks the widest the CPU supports.</summary>
internal enum BlisSgemmKernel
{
    Best = 0,
    Scalar,
    Avx2,
    Avx512,
}

/// <summary>
/// Micro-kernels computing one MR×NR = 6×64 tile: <c>C = alpha * (Apanel · Bpanel) + beta * C</c>. The A panel is
/// read through strides: element (r, p) is <c>a[r * rs + p * step]</c> (packed: rs = 1, step = 6; A used in place:
/// rs = lda, step = 1); rows ≥ <c>rows</c> alias row 0 so they never read out of bounds. The packed B panel is
/// kc × 64 (p-major). beta = 0 never reads C.
/// </summary>
internal static unsafe class SgemmMicroKernels
{
    public const int MR = 6;
    public const int NR = 64;

    public static BlisSgemmKernel Resolve(BlisSgemmKernel requested)
    {
        if (requested == BlisSgemmKernel.Best)
            return Avx512F.IsSupported ? BlisSgemmKernel.Avx512 : Fma.IsSupported && Avx2.IsSupported ? BlisSgemmKernel.Avx2 : BlisSgemmKernel.Scalar;
        if (requested == BlisSgemmKernel.Avx512 && !Avx512F.IsSupported) throw new PlatformNotSupportedException("AVX-512F");
        if (requested == BlisSgemmKernel.Avx2 && !(Fma.IsSupported && Avx2.IsSupported)) throw new PlatformNotSupportedException("AVX2/FMA");
        return requested;
    }

    /// <summary>Computes a tile of <paramref name="rows"/> ≤ 6 by <paramref name="cols"/> ≤ 64 with the given kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    public static void Tile(BlisSgemmKernel kernel, int kc, float* a, nint rs, nint step, float* b, float* c, int ldc,
        int rows, int cols, float alpha, float beta)
    {
        if (kernel == BlisSgemmKernel.Avx512)
        {
            // Edge tiles are written in place: missing rows are not stored, missing columns are masked off (a scratch tile
            // and a scalar merge cost almost as much as the FMAs of a shallow tile). Narrow edges (n = 16 for a
            // 16-expert gate, the 16-column tail of kv_a's 80) take a narrower kernel: the full 64-wide one would spend
            // 3/4 of its FMAs on padding.
            if (cols <= 16) Avx512Kernel6x16(kc, a, rs, step, rows, cols, b, c, ldc, alpha, beta);
            else if (cols <= 32) Avx512Kernel6x32(kc, a, rs, step, rows, cols, b, c, ldc, alpha, beta);
            else Avx512Kernel6x64(kc, a, rs, step, rows, cols, b, c, ldc, alpha, beta);
            return;
        }
        if (rows == MR && cols == NR)
        {
            Full(kernel, kc, a, rs, step, MR, b, c, ldc, alpha, beta);
            return;
        }
        // Edge tile of the fallback kernels: compute the whole padded tile into a scratch tile, then merge the valid part.
        float* tmp = stackalloc float[MR * NR + 16];
        tmp = (float*)(((nint)tmp + 63) & ~(nint)63);
        Full(kernel, kc, a, rs, step, rows, b, tmp, NR, 1f, 0f);
        for (int r = 0; r < rows; r++)
        {
            float* cr = c + (nint)r * ldc;
            float* tr = tmp + r * NR;
            if (beta == 0f)
                for (int j = 0; j < cols; j++) cr[j] = alpha * tr[j];
            else
                for (int j = 0; j < cols; j++) cr[j] = alpha * tr[j] + beta * cr[j];
        }
    }

    /// <summary>A whole 6×64 tile with the AVX2 or the scalar kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Full(BlisSgemmKernel kernel, int kc, float* a, nint rs, nint step, int rows, float* b, float* c, int ldc,
        float alpha, float beta)
    {
        switch (kernel)
        {
            case BlisSgemmKernel.Avx2:
                for (int q = 0; q < NR; q += 16) Avx2Kernel6x16(kc, a, rs, step, rows, b + q, c + q, ldc, alpha, beta);
                break;
            default: ScalarKernel(kc, a, rs, step, rows, b, c, ldc, alpha, beta); break;
        }
    }

    /// <summary>Pointer to row r of the A panel, aliasing row 0 for rows past the valid ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Row(float* a, nint rs, int r, int rows) => r < rows ? a + r * rs : a;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Avx512Kernel6x64(int kc, float* a, nint rs, nint step, int rows, int cols, float* b, float* c, int ldc,
        float alpha, float beta)
    {
        float* a0 = a, a1 = Row(a, rs, 1, rows), a2 = Row(a, rs, 2, rows), a3 = Row(a, rs, 3, rows);
        float* a4 = Row(a, rs, 4, rows), a5 = Row(a, rs, 5, rows);
        nint off = 0;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = Vector512.Load(b + 16);
            Vector512<float> b2 = Vector512.Load(b + 32);
            Vector512<float> b3 = Vector512.Load(b + 48);
            Vector512<float> av = Vector512.Create(a0[off]);
            c00 = Avx512F.FusedMultiplyAdd(av, b0, c00); c01 = Avx512F.FusedMultiplyAdd(av, b1, c01);
            c02 = Avx512F.FusedMultiplyAdd(av, b2, c02); c03 = Avx512F.FusedMultiplyAdd(av, b3, c03);
            av = Vector512.Create(a1[off]);
            c10 = Avx512F.FusedMultiplyAdd(av, b0, c10); c11 = Avx512F.FusedMultiplyAdd(av, b1, c11);
            c12 = Avx512F.FusedMultiplyAdd(av, b2, c12); c13 = Avx512F.FusedMultiplyAdd(av, b3, c13);
            av = Vector512.Create(a2[off]);
            c20 = Avx512F.FusedMultiplyAdd(av, b0, c20); c21 = Avx512F.FusedMultiplyAdd(av, b1, c21);
            c22 = Avx512F.FusedMultiplyAdd(av, b2, c22); c23 = Avx512F.FusedMultiplyAdd(av, b3, c23);
            av = Vector512.Create(a3[off]);
            c30 = Avx512F.FusedMultiplyAdd(av, b0, c30); c31 = Avx512F.FusedMultiplyAdd(av, b1, c31);
            c32 = Avx512F.FusedMultiplyAdd(av, b2, c32); c33 = Avx512F.FusedMultiplyAdd(av, b3, c33);
            av = Vector512.Create(a4[off]);
            c40 = Avx512F.FusedMultiplyAdd(av, b0, c40); c41 = Avx512F.FusedMultiplyAdd(av, b1, c41);
            c42 = Avx512F.FusedMultiplyAdd(av, b2, c42); c43 = Avx512F.FusedMultiplyAdd(av, b3, c43);
            av = Vector512.Create(a5[off]);
            c50 = Avx512F.FusedMultiplyAdd(av, b0, c50); c51 = Avx512F.FusedMultiplyAdd(av, b1, c51);
            c52 = Avx512F.FusedMultiplyAdd(av, b2, c52); c53 = Avx512F.FusedMultiplyAdd(av, b3, c53);
            off += step;
            b += NR;
        }
        var store = new TileStore(alpha, beta, cols);
        store.Row(c, c00, c01, c02, c03);
        if (rows > 1) store.Row(c + ldc, c10, c11, c12, c13);
        if (rows > 2) store.Row(c + 2 * (nint)ldc, c20, c21, c22, c23);
        if (rows > 3) store.Row(c + 3 * (nint)ldc, c30, c31, c32, c33);
        if (rows > 4) store.Row(c + 4 * (nint)ldc, c40, c41, c42, c43);
        if (rows > 5) store.Row(c + 5 * (nint)ldc, c50, c51, c52, c53);
    }

    /// <summary>Tile of ≤ 6 rows × ≤ 16 columns: two accumulator sets over even and odd depth steps, so twelve independent
    /// FMA chains hide the FMA latency that six alone would expose.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Avx512Kernel6x16(int kc, float* a, nint rs, nint step, int rows, int cols, float* b, float* c, int ldc,
        float alpha, float beta)
    {
        float* a0 = a, a1 = Row(a, rs, 1, rows), a2 = Row(a, rs, 2, rows), a3 = Row(a, rs, 3, rows);
        float* a4 = Row(a, rs, 4, rows), a5 = Row(a, rs, 5, rows);
        nint off = 0;
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default;
        int p = 0;
        for (; p + 2 <= kc; p += 2)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + NR);
            nint off1 = off + step;
            c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a0[off]), b0, c0); d0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a0[off1]), b1, d0);
            c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a1[off]), b0, c1); d1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a1[off1]), b1, d1);
            c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a2[off]), b0, c2); d2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a2[off1]), b1, d2);
            c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a3[off]), b0, c3); d3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a3[off1]), b1, d3);
            c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a4[off]), b0, c4); d4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a4[off1]), b1, d4);
            c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a5[off]), b0, c5); d5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a5[off1]), b1, d5);
            off += 2 * step;
            b += 2 * NR;
        }
        if (p < kc)
        {
            Vector512<float> b0 = Vector512.Load(b);
            c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a0[off]), b0, c0); c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a1[off]), b0, c1);
            c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a2[off]), b0, c2); c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a3[off]), b0, c3);
            c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a4[off]), b0, c4); c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a5[off]), b0, c5);
        }
        var store = new TileStore(alpha, beta, cols);
        store.Part(c, c0 + d0, 0);
        if (rows > 1) store.Part(c + ldc, c1 + d1, 0);
        if (rows > 2) store.Part(c + 2 * (nint)ldc, c2 + d2, 0);
        if (rows > 3) store.Part(c + 3 * (nint)ldc, c3 + d3, 0);
        if (rows > 4) store.Part(c + 4 * (nint)ldc, c4 + d4, 0);
        if (rows > 5) store.Part(c + 5 * (nint)ldc, c5 + d5, 0);
    }

    /// <summary>Tile of ≤ 6 rows × ≤ 32 columns: half the 6×64 kernel, twelve FMA chains.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Avx512Kernel6x32(int kc, float* a, nint rs, nint step, int rows, int cols, float* b, float* c, int ldc,
        float alpha, float beta)
    {
        float* a0 = a, a1 = Row(a, rs, 1, rows), a2 = Row(a, rs, 2, rows), a3 = Row(a, rs, 3, rows);
        float* a4 = Row(a, rs, 4, rows), a5 = Row(a, rs, 5, rows);
        nint off = 0;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
            Vector512<float> av = Vector512.Create(a0[off]);
            c00 = Avx512F.FusedMultiplyAdd(av, b0, c00); c01 = Avx512F.FusedMultiplyAdd(av, b1, c01);
            av = Vector512.Create(a1[off]);
            c10 = Avx512F.FusedMultiplyAdd(av, b0, c10); c11 = Avx512F.FusedMultiplyAdd(av, b1, c11);
            av = Vector512.Create(a2[off]);
            c20 = Avx512F.FusedMultiplyAdd(av, b0, c20); c21 = Avx512F.FusedMultiplyAdd(av, b1, c21);
            av = Vector512.Create(a3[off]);
            c30 = Avx512F.FusedMultiplyAdd(av, b0, c30); c31 = Avx512F.FusedMultiplyAdd(av, b1, c31);
            av = Vector512.Create(a4[off]);
            c40 = Avx512F.FusedMultiplyAdd(av, b0, c40); c41 = Avx512F.FusedMultiplyAdd(av, b1, c41);
            av = Vector512.Create(a5[off]);
            c50 = Avx512F.FusedMultiplyAdd(av, b0, c50); c51 = Avx512F.FusedMultiplyAdd(av, b1, c51);
            off += step;
            b += NR;
        }
        var store = new TileStore(alpha, beta, cols);
        store.Part(c, c00, 0); store.Part(c, c01, 16);
        if (rows > 1) { store.Part(c + ldc, c10, 0); store.Part(c + ldc, c11, 16); }
        if (rows > 2) { store.Part(c + 2 * (nint)ldc, c20, 0); store.Part(c + 2 * (nint)ldc, c21, 16); }
        if (rows > 3) { store.Part(c + 3 * (nint)ldc, c30, 0); store.Part(c + 3 * (nint)ldc, c31, 16); }
        if (rows > 4) { store.Part(c + 4 * (nint)ldc, c40, 0); store.Part(c + 4 * (nint)ldc, c41, 16); }
        if (rows > 5) { store.Part(c + 5 * (nint)ldc, c50, 0); store.Part(c + 5 * (nint)ldc, c51, 16); }
    }

    /// <summary>
    /// Stores a tile's accumulators into C: <c>C = alpha · acc + beta · C</c> for the first <c>cols</c> columns only
    /// (lanes past them are masked: neither read nor written, so C may end right after the tile); full 16-column
    /// parts are plain stores.
    /// </summary>
    private readonly struct TileStore(float alpha, float beta, int cols)
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Row(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3)
        {
            Part(c, v0, 0); Part(c, v1, 16); Part(c, v2, 32); Part(c, v3, 48);
        }

        /// <summary>Columns [j, j + 16) of one row, clipped to cols.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Part(float* c, Vector512<float> v, int j)
        {
            if (j >= cols) return;
            Vector512<float> va = Vector512.Create(alpha);
            if (j + 16 <= cols)
            {
                (beta == 0f ? va * v : Avx512F.FusedMultiplyAdd(va, v, Vector512.Create(beta) * Vector512.Load(c + j))).Store(c + j);
                return;
            }
            Vector512<float> mask = Vector512.LessThan(Vector512<float>.Indices, Vector512.Create((float)(cols - j)));
            Vector512<float> r = beta == 0f ? va * v
                : Avx512F.FusedMultiplyAdd(va, v, Vector512.Create(beta) * Avx512F.MaskLoad(c + j, mask, Vector512<float>.Zero));
            Avx512F.MaskStore(c + j, mask, r);
        }
    }

    /// <summary>6×16 AVX2 kernel over a 16-column slice of a 64-wide packed B panel (row stride 64).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Avx2Kernel6x16(int kc, float* a, nint rs, nint step, int rows, float* b, float* c, int ldc,
        float alpha, float beta)
    {
        float* a0 = a, a1 = Row(a, rs, 1, rows), a2 = Row(a, rs, 2, rows), a3 = Row(a, rs, 3, rows);
        float* a4 = Row(a, rs, 4, rows), a5 = Row(a, rs, 5, rows);
        nint off = 0;
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b);
            Vector256<float> b1 = Vector256.Load(b + 8);
            Vector256<float> av = Vector256.Create(a0[off]);
            c00 = Fma.MultiplyAdd(av, b0, c00); c01 = Fma.MultiplyAdd(av, b1, c01);
            av = Vector256.Create(a1[off]);
            c10 = Fma.MultiplyAdd(av, b0, c10); c11 = Fma.MultiplyAdd(av, b1, c11);
            av = Vector256.Create(a2[off]);
            c20 = Fma.MultiplyAdd(av, b0, c20); c21 = Fma.MultiplyAdd(av, b1, c21);
            av = Vector256.Create(a3[off]);
            c30 = Fma.MultiplyAdd(av, b0, c30); c31 = Fma.MultiplyAdd(av, b1, c31);
            av = Vector256.Create(a4[off]);
            c40 = Fma.MultiplyAdd(av, b0, c40); c41 = Fma.MultiplyAdd(av, b1, c41);
            av = Vector256.Create(a5[off]);
            c50 = Fma.MultiplyAdd(av, b0, c50); c51 = Fma.MultiplyAdd(av, b1, c51);
            off += step;
            b += NR;
        }
        Store256Row(c, alpha, beta, c00, c01);
        Store256Row(c + ldc, alpha, beta, c10, c11);
        Store256Row(c + 2 * (nint)ldc, alpha, beta, c20, c21);
        Store256Row(c + 3 * (nint)ldc, alpha, beta, c30, c31);
        Store256Row(c + 4 * (nint)ldc, alpha, beta, c40, c41);
        Store256Row(c + 5 * (nint)ldc, alpha, beta, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256Row(float* c, float alpha, float beta, Vector256<float> v0, Vector256<float> v1)
    {
        Vector256<float> va = Vector256.Create(alpha);
        if (beta == 0f)
        {
            (va * v0).Store(c); (va * v1).Store(c + 8);
        }
        else
        {
            Vector256<float> vb = Vector256.Create(beta);
            Fma.MultiplyAdd(va, v0, vb * Vector256.Load(c)).Store(c);
            Fma.MultiplyAdd(va, v1, vb * Vector256.Load(c + 8)).Store(c + 8);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScalarKernel(int kc, float* a, nint rs, nint step, int rows, float* b, float* c, int ldc,
        float alpha, float beta)
    {
        float* acc = stackalloc float[NR];
        for (int r = 0; r < MR; r++)
        {
            new Span<float>(acc, NR).Clear();
            for (int p = 0; p < kc; p++)
            {
                float av = Row(a, rs, r, rows)[p * step];
                float* bp = b + (nint)p * NR;
                for (int j = 0; j < NR; j++) acc[j] += av * bp[j];
            }
            float* cr = c + (nint)r * ldc;
            if (beta == 0f)
                for (int j = 0; j < NR; j++) cr[j] = alpha * acc[j];
            else
                for (int j = 0; j < NR; j++) cr[j] = alpha * acc[j] + beta * cr[j];
        }
    }
}
