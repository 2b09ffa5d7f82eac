using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Packs blocks of op(A) and op(B) into the layouts the micro-kernels read. Transposes are absorbed here, so the
/// kernels only ever see: B panel = kc × 64 floats (p-major), zero padded; A either in place (rows at stride lda) or,
/// when transposed, as a kc × 6 panel (p-major).
/// </summary>
internal static unsafe class SgemmPacking
{
    private const int MR = SgemmMicroKernels.MR;
    private const int NR = SgemmMicroKernels.NR;

    /// <summary>
    /// Packs rows [i0, i0+mc) × depth [p0, p0+kc) of op(A) = Aᵀ (A stored (k, m): op(A)[i,p] = a[p*lda + i]) into
    /// ceil(mc/6) panels of kc × 6 at <paramref name="dst"/>, zero padding missing rows. (A not transposed needs no
    /// packing: the micro-kernel reads its rows in place.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackATransposed(float* a, int lda, int m, int i0, int mc, int p0, int kc, float* dst)
    {
        // Whole panels are packed a few depth steps at a time across all panels: those steps' runs of A's rows are
        // read into L1 once for the whole block and every panel is then written sequentially. Walking all kc rows per
        // panel instead re-read each row once per panel and touched a new page per step for wide A (a 32 KB row stride
        // for the vocabulary's dlogits); one depth step across all panels scattered every store over 16 panels.
        int vectorPanels = 0;
        if (Avx.IsSupported && kc > 0)
        {
            vectorPanels = mc / MR;
            while (vectorPanels > 0 && i0 + (vectorPanels - 1) * MR + 8 > m) vectorPanels--; // 8-wide loads stay inside the row
        }
        if (vectorPanels > 0)
        {
            const int DepthSteps = 8;
            float* src = a + (nint)p0 * lda + i0;
            nint panelStride = (nint)kc * MR;
            // Eight depth steps of a panel are 48 contiguous floats: gathered into three zmm registers by two-source
            // permutes and stored whole, instead of eight overlapping 8-float stores that straddle cache lines.
            int pWhole = Avx512F.IsSupported ? kc / DepthSteps * DepthSteps : 0;
            for (int pb = 0; pb < pWhole; pb += DepthSteps)
                for (int q = 0; q < vectorPanels; q++)
                    PackEightSteps(src + (nint)pb * lda + q * MR, lda, dst + q * panelStride + pb * MR);
            for (int pb = pWhole; pb < kc - 1; pb += DepthSteps)
            {
                int pe = Math.Min(pb + DepthSteps, kc - 1);
                for (int q = 0; q < vectorPanels; q++)
                {
                    float* s = src + (nint)pb * lda + q * MR;
                    float* d = dst + q * panelStride + pb * MR;
                    // Six floats per step; the 8-wide store spills into the panel's next depth step (written after).
                    for (int p = pb; p < pe; p++, s += lda, d += MR) Vector256.Load(s).Store(d);
                }
            }
            if (pWhole < kc)
            {
                // The last step's spill would land on the next panel's first step (already written): exact copies.
                float* sl = src + (nint)(kc - 1) * lda;
                float* dl = dst + (kc - 1) * MR;
                for (int q = 0; q < vectorPanels; q++)
                {
                    float* dq = dl + q * panelStride;
                    Vector128.Load(sl + q * MR).Store(dq);
                    dq[4] = sl[q * MR + 4];
                    dq[5] = sl[q * MR + 5];
                }
            }
        }
        for (int ir = vectorPanels * MR; ir < mc; ir += MR)
        {
            int rows = Math.Min(MR, mc - ir);
            float* src = a + (nint)p0 * lda + i0 + ir;
            float* panel = dst + (nint)(ir / MR) * kc * MR;
            for (int p = 0; p < kc; p++)
            {
                float* s = src + (nint)p * lda;
                float* d = panel + p * MR;
                int r = 0;
                for (; r < rows; r++) d[r] = s[r];
                for (; r < MR; r++) d[r] = 0f;
            }
        }
    }

    /// <summary>
    /// Six floats from each of eight rows (at stride <paramref name="lda"/>; 8 are read from each) into 48 contiguous
    /// floats at <paramref name="dst"/>: rows r0..r7 of a transposed-A panel, eight depth steps.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackEightSteps(float* s, nint lda, float* dst)
    {
        Vector512<float> r01 = Vector512.Create(Vector256.Load(s), Vector256.Load(s + lda));
        Vector512<float> r23 = Vector512.Create(Vector256.Load(s + 2 * lda), Vector256.Load(s + 3 * lda));
        Vector512<float> r45 = Vector512.Create(Vector256.Load(s + 4 * lda), Vector256.Load(s + 5 * lda));
        Vector512<float> r67 = Vector512.Create(Vector256.Load(s + 6 * lda), Vector256.Load(s + 7 * lda));
        // Lane j of a pair holds row 2i's float j (j < 8) or row 2i+1's float j − 8; indices ≥ 16 pick the second pair.
        Avx512F.PermuteVar16x32x2(r01, Vector512.Create(0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19), r23).Store(dst);
        Avx512F.PermuteVar16x32x2(r23, Vector512.Create(4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 24, 25), r45).Store(dst + 16);
        Avx512F.PermuteVar16x32x2(r45, Vector512.Create(10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 24, 25, 26, 27, 28, 29), r67).Store(dst + 32);
    }

    /// <summary>
    /// Packs one 64-column strip: columns [j0, j0+cols) × depth [p0, p0+kc) of op(B) into kc × 64 at
    /// <paramref name="dst"/>, zero padding columns ≥ cols. Not transposed: op(B)[p,j] = b[p*ldb + j];
    /// transposed: op(B)[p,j] = b[j*ldb + p].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackBStrip(bool transB, float* b, int ldb, int j0, int cols, int p0, int kc, float* dst)
    {
        if (!transB)
        {
            float* src = b + (nint)p0 * ldb + j0;
            if (cols == NR && Vector512.IsHardwareAccelerated)
            {
                for (int p = 0; p < kc; p++)
                {
                    float* s = src + (nint)p * ldb;
                    float* d = dst + p * NR;
                    Vector512.Load(s).Store(d); Vector512.Load(s + 16).Store(d + 16);
                    Vector512.Load(s + 32).Store(d + 32); Vector512.Load(s + 48).Store(d + 48);
                }
            }
            else
            {
                for (int p = 0; p < kc; p++)
                {
                    float* s = src + (nint)p * ldb;
                    float* d = dst + p * NR;
                    new ReadOnlySpan<float>(s, cols).CopyTo(new Span<float>(d, cols));
                    if (cols < NR) new Span<float>(d + cols, NR - cols).Clear();
                }
            }
            return;
        }

        float* bt = b + (nint)j0 * ldb + p0; // row j of bt = column j0 + j of op(B)
        int fullGroups = Avx.IsSupported ? cols / 8 : 0;
        int kc8 = Avx.IsSupported ? kc & ~7 : 0;
        for (int g = 0; g < fullGroups; g++)
        {
            float* s = bt + (nint)g * 8 * ldb;
            for (int p = 0; p < kc8; p += 8)
            {
                Transpose8x8(Vector256.Load(s + p), Vector256.Load(s + ldb + p), Vector256.Load(s + 2 * (nint)ldb + p),
                    Vector256.Load(s + 3 * (nint)ldb + p), Vector256.Load(s + 4 * (nint)ldb + p),
                    Vector256.Load(s + 5 * (nint)ldb + p), Vector256.Load(s + 6 * (nint)ldb + p),
                    Vector256.Load(s + 7 * (nint)ldb + p),
                    out var o0, out var o1, out var o2, out var o3, out var o4, out var o5, out var o6, out var o7);
                float* d = dst + p * NR + g * 8;
                o0.Store(d); o1.Store(d + NR); o2.Store(d + 2 * NR); o3.Store(d + 3 * NR);
                o4.Store(d + 4 * NR); o5.Store(d + 5 * NR); o6.Store(d + 6 * NR); o7.Store(d + 7 * NR);
            }
        }
        // Whatever the 8×8 blocks did not cover: depth tail for the full groups, then the remaining columns.
        int coveredCols = fullGroups * 8;
        for (int p = kc8; p < kc; p++)
            for (int j = 0; j < coveredCols; j++) dst[p * NR + j] = bt[(nint)j * ldb + p];
        for (int p = 0; p < kc; p++)
        {
            float* d = dst + p * NR;
            for (int j = coveredCols; j < cols; j++) d[j] = bt[(nint)j * ldb + p];
            for (int j = cols; j < NR; j++) d[j] = 0f;
        }
    }

    /// <summary>
    /// <see cref="PackBStrip"/> for op(B) not transposed whose depth rows are gathered: depth row p0 + p of op(B) is
    /// row <c>rows[p0 + p]</c> of <paramref name="b"/> (an expert's tokens, read where they lie instead of copied out).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackBStripGathered(float* b, int ldb, int* rows, int j0, int cols, int p0, int kc, float* dst)
    {
        if (cols == NR && Vector512.IsHardwareAccelerated)
        {
            for (int p = 0; p < kc; p++)
            {
                float* s = b + (nint)rows[p0 + p] * ldb + j0;
                float* d = dst + p * NR;
                Vector512.Load(s).Store(d); Vector512.Load(s + 16).Store(d + 16);
                Vector512.Load(s + 32).Store(d + 32); Vector512.Load(s + 48).Store(d + 48);
            }
            return;
        }
        for (int p = 0; p < kc; p++)
        {
            float* s = b + (nint)rows[p0 + p] * ldb + j0;
            float* d = dst + p * NR;
            new ReadOnlySpan<float>(s, cols).CopyTo(new Span<float>(d, cols));
            if (cols < NR) new Span<float>(d + cols, NR - cols).Clear();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose8x8(
        Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7,
        out Vector256<float> o0, out Vector256<float> o1, out Vector256<float> o2, out Vector256<float> o3,
        out Vector256<float> o4, out Vector256<float> o5, out Vector256<float> o6, out Vector256<float> o7)
    {
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
        Vector256<float> s0 = Avx.Shuffle(t0, t2, 0x44), s1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> s2 = Avx.Shuffle(t1, t3, 0x44), s3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> s4 = Avx.Shuffle(t4, t6, 0x44), s5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> s6 = Avx.Shuffle(t5, t7, 0x44), s7 = Avx.Shuffle(t5, t7, 0xEE);
        o0 = Avx.Permute2x128(s0, s4, 0x20); o1 = Avx.Permute2x128(s1, s5, 0x20);
        o2 = Avx.Permute2x128(s2, s6, 0x20); o3 = Avx.Permute2x128(s3, s7, 0x20);
        o4 = Avx.Permute2x128(s0, s4, 0x31); o5 = Avx.Permute2x128(s1, s5, 0x31);
        o6 = Avx.Permute2x128(s2, s6, 0x31); o7 = Avx.Permute2x128(s3, s7, 0x31);
    }
}
