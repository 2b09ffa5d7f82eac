using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Single-threaded products with one operand packed once by the caller and reused across calls over a prefix of it.
/// The attention kernel packs a head's keys and values once, then multiplies each query tile against only the keys it
/// can see (a prefix of columns of Kᵀ, a prefix of depth of Vᵀ), where the general driver would repack both for every
/// tile. Layouts are the blocked driver's: B as 64-wide strips of k × 64 floats (strip s at s · 64 · k, p-major), A as
/// 6-row panels of k × 6 floats (panel r at r · 6 · k, p-major); so a column prefix of B is its first strips and a
/// depth prefix of A is the start of every panel.
/// </summary>
internal static unsafe class SgemmPrepacked
{
    private const int MR = SgemmMicroKernels.MR;
    private const int NR = SgemmMicroKernels.NR;

    /// <summary>Floats a packed op(B) of <paramref name="n"/> columns and depth <paramref name="k"/> takes.</summary>
    public static int PackedBLength(int n, int k) => checked(RoundUp(n, NR) * k);

    /// <summary>Floats a packed op(A) of <paramref name="m"/> rows and depth <paramref name="k"/> takes.</summary>
    public static int PackedALength(int m, int k) => checked(RoundUp(m, MR) * k);

    /// <summary>
    /// Packs columns [0, n) of op(B) (depth <paramref name="kc"/>, from <paramref name="b"/>) into depth rows
    /// [p0, p0 + kc) of a packed B of total depth <paramref name="k"/>: one packed operand can be assembled from
    /// several sources along its depth (MLA's keys are [k_nope ; k_pe]).
    /// </summary>
    public static void PackB(bool transB, float* b, int ldb, int n, int k, int p0, int kc, float* dst)
    {
        for (int j = 0; j < n; j += NR)
            SgemmPacking.PackBStrip(transB, b, ldb, j, Math.Min(NR, n - j), 0, kc, dst + (nint)j * k + (nint)p0 * NR);
    }

    /// <summary>Packs op(A) = Xᵀ (X stored [k, m] at stride <paramref name="ldx"/>) whole: m rows over depth k.</summary>
    public static void PackATransposed(float* x, int ldx, int m, int k, float* dst) =>
        SgemmPacking.PackATransposed(x, ldx, m, 0, m, 0, k, dst);

    /// <summary>
    /// C[m, n] = alpha · A[m, k] · B[k, :n] + beta · C with A read in place (rows at stride <paramref name="lda"/>) and
    /// B packed by <see cref="PackB"/> with depth k and at least n columns. beta = 0 never reads C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyPackedB(int m, int n, int k, float alpha, float* a, int lda, float* packedB, float beta, float* c, int ldc)
    {
        if (m <= 0 || n <= 0) return;
        var kernel = SgemmMicroKernels.Resolve(BlisSgemmKernel.Best);
        for (int j = 0; j < n; j += NR)
        {
            int cols = Math.Min(NR, n - j);
            float* strip = packedB + (nint)j * k;
            for (int i = 0; i < m; i += MR)
                SgemmMicroKernels.Tile(kernel, k, a + (nint)i * lda, lda, 1, strip, c + (nint)i * ldc + j, ldc, Math.Min(MR, m - i), cols, alpha, beta);
        }
    }

    /// <summary>
    /// C[m, 64] = alpha · A[:m, :k] · S + beta · C with A packed by <see cref="PackATransposed"/> (total depth
    /// <paramref name="kPacked"/> ≥ k) and S a ready-made 64-wide B strip (k × 64 floats, p-major): a tile whose
    /// producer wrote it in the packed layout, such as the attention forward's probabilities P (keys × 64 queries).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyPackedAStrip(int m, int k, int kPacked, float alpha, float* packedA, float* strip, float beta, float* c, int ldc)
    {
        if (m <= 0) return;
        if (k > kPacked) throw new ArgumentException($"depth {k} exceeds the packed depth {kPacked}");
        var kernel = SgemmMicroKernels.Resolve(BlisSgemmKernel.Best);
        for (int i = 0; i < m; i += MR)
            SgemmMicroKernels.Tile(kernel, k, packedA + (nint)i * kPacked, 1, MR, strip, c + (nint)i * ldc, ldc, Math.Min(MR, m - i), NR, alpha, beta);
    }

    private static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;
}
