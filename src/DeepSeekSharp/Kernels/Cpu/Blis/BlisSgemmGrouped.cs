using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// One product of a grouped GEMM (<see cref="BlisSgemm.MultiplyGrouped"/>): <c>C = alpha · op(A) · op(B) + beta · C</c>
/// with its own shape and operands; layouts as in the plain driver. When <see cref="BRows"/> is set (op(B) not
/// transposed), depth row p of op(B) is row <c>BRows[p]</c> of <see cref="B"/>: an MoE expert's tokens, read where
/// they lie in the layer input instead of being gathered into a copy first.
/// </summary>
public readonly unsafe struct SgemmGroup(int m, int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc, int* bRows = null)
{
    public int M { get; } = m;
    public int N { get; } = n;
    public int K { get; } = k;
    public float* A { get; } = a;
    public int Lda { get; } = lda;
    public float* B { get; } = b;
    public int Ldb { get; } = ldb;
    public float* C { get; } = c;
    public int Ldc { get; } = ldc;
    public int* BRows { get; } = bRows;
}

/// <summary>
/// Grouped SGEMM: many independent products of different shapes in one call (the experts of an MoE layer, each with
/// its own token count and weights). All groups' work is cut into tasks of (group, row range, column range), largest
/// first, and the workers claim them dynamically, so a big expert is shared by all cores while small ones fill the
/// gaps; per-expert calls would either split every small GEMM over all cores or leave cores idle behind the largest.
/// A task packs its B block once per depth block and sweeps its rows with the same 6×64 micro-kernel as the plain
/// driver (A read in place, or packed into 6-row panels when transposed).
/// </summary>
public static unsafe partial class BlisSgemm
{
    /// <summary>Smallest task the grouped driver makes when splitting for parallelism, in multiply-adds.</summary>
    private const long MinGroupedTaskWork = 1L << 20;

    /// <summary>
    /// For every group g: <c>C_g = alpha · op(A_g) · op(B_g) + beta · C_g</c> (beta = 0 never reads C). Groups must not
    /// write overlapping C; empty groups (m, n = 0) are skipped, k = 0 just scales C.
    /// </summary>
    public static void MultiplyGrouped(WorkerPool? pool, bool transA, bool transB, float alpha, float beta, ReadOnlySpan<SgemmGroup> groups)
    {
        foreach (var g in groups)
        {
            ValidateShape(transA, transB, g.M, g.N, g.K, g.Lda, g.Ldb, g.Ldc);
            if (g.BRows != null && transB) throw new ArgumentException("gathered B rows need op(B) not transposed");
        }
        MultiplyGroupedCore(pool, BlisSgemmKernel.Best, transA, transB, alpha, beta, groups);
    }

    internal static void MultiplyGroupedCore(WorkerPool? pool, BlisSgemmKernel kernel, bool transA, bool transB, float alpha, float beta,
        ReadOnlySpan<SgemmGroup> groups)
    {
        long total = 0;
        int live = 0;
        foreach (var g in groups)
        {
            if (g.M == 0 || g.N == 0) continue;
            if (g.K == 0 || alpha == 0f)
            {
                ScaleC(g.M, g.N, beta, g.C, g.Ldc);
                continue;
            }
            total += (long)g.M * g.N * g.K;
            live++;
        }
        if (live == 0) return;

        int[] shapes = System.Buffers.ArrayPool<int>.Shared.Rent(3 * groups.Length);
        for (int gi = 0; gi < groups.Length; gi++)
            (shapes[3 * gi], shapes[3 * gi + 1], shapes[3 * gi + 2]) = (groups[gi].M, groups[gi].N, alpha == 0f ? 0 : groups[gi].K);
        int threads = pool?.AvailableThreads ?? 1;
        GroupedTask[] rented = PlanGroupedTasks(threads, shapes.AsSpan(0, 3 * groups.Length), total, out int count);
        System.Buffers.ArrayPool<int>.Shared.Return(shapes);
        try
        {
            fixed (SgemmGroup* pg = groups)
            {
                var job = new GroupedJob(SgemmMicroKernels.Resolve(kernel), transA, transB, alpha, beta, pg, rented);
                if (pool is null || threads == 1 || count == 1)
                    for (int i = 0; i < count; i++) job.Execute(i);
                else
                    pool.Run(count, job);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<GroupedTask>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Cuts the groups (M, N, K triples in <paramref name="shapes"/>; K = 0 skips a group) into tasks of (group, row
    /// range, column range), largest first, rented from the shared array pool (the caller returns them). Enough tasks
    /// that dynamic claiming evens out the workers; none so small that repacking B dominates.
    /// </summary>
    internal static GroupedTask[] PlanGroupedTasks(int threads, ReadOnlySpan<int> shapes, long total, out int count)
    {
        int groups = shapes.Length / 3;
        long target = threads == 1 ? long.MaxValue : Math.Max(MinGroupedTaskWork, total / (4L * threads));
        int capacity = 0;
        for (int gi = 0; gi < groups; gi++)
        {
            int m = shapes[3 * gi], n = shapes[3 * gi + 1], k = shapes[3 * gi + 2];
            if (m > 0 && n > 0 && k > 0)
                capacity += (m + SgemmBlocked.MC - 1) / SgemmBlocked.MC * ((n + SgemmMicroKernels.NR - 1) / SgemmMicroKernels.NR);
        }
        GroupedTask[] rented = System.Buffers.ArrayPool<GroupedTask>.Shared.Rent(Math.Max(1, capacity));
        count = 0;
        for (int gi = 0; gi < groups; gi++)
        {
            int m = shapes[3 * gi], n = shapes[3 * gi + 1], k = shapes[3 * gi + 2];
            if (m == 0 || n == 0 || k == 0) continue;
            long work = (long)m * n * k;
            int strips = (n + SgemmMicroKernels.NR - 1) / SgemmMicroKernels.NR, rowBlocks = (m + SgemmBlocked.MC - 1) / SgemmBlocked.MC;
            long pieces = target == long.MaxValue ? 1 : Math.Max(1, (work + target - 1) / target);
            // Column blocks first (each repacks only its own B), never wider than the plain driver's NC; then rows.
            int colBlocks = (int)Math.Clamp(pieces, (n + SgemmBlocked.NC - 1) / SgemmBlocked.NC, strips);
            int rowSplit = (int)Math.Clamp((pieces + colBlocks - 1) / colBlocks, 1, rowBlocks);
            int stripsPer = (strips + colBlocks - 1) / colBlocks, blocksPer = (rowBlocks + rowSplit - 1) / rowSplit;
            for (int r = 0; r < rowBlocks; r += blocksPer)
                for (int s = 0; s < strips; s += stripsPer)
                {
                    int i0 = r * SgemmBlocked.MC, j0 = s * SgemmMicroKernels.NR;
                    int rows = Math.Min(blocksPer * SgemmBlocked.MC, m - i0), cols = Math.Min(stripsPer * SgemmMicroKernels.NR, n - j0);
                    rented[count++] = new GroupedTask(gi, i0, rows, j0, cols, (long)rows * cols * k);
                }
        }
        rented.AsSpan(0, count).Sort(static (x, y) => y.Work.CompareTo(x.Work));
        return rented;
    }

    internal readonly record struct GroupedTask(int Group, int I0, int Rows, int J0, int Cols, long Work);

    private sealed class GroupedJob(BlisSgemmKernel kernel, bool transA, bool transB, float alpha, float beta, SgemmGroup* groups,
        GroupedTask[] tasks) : IWorkerTask
    {
        private const int MR = SgemmMicroKernels.MR, NR = SgemmMicroKernels.NR, MC = SgemmBlocked.MC, KC = SgemmBlocked.KC;

        [ThreadStatic] private static PackBuffer? t_packA;
        [ThreadStatic] private static PackBuffer? t_packB;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int taskIndex)
        {
            var t = tasks[taskIndex];
            SgemmGroup g = groups[t.Group];
            int k = g.K, kcMax = SgemmBlocked.DepthBlock(k);
            float* packedB = PackBuffer.Get(ref t_packB, SgemmPrepacked.PackedBLength(t.Cols, kcMax));
            float* packedA = transA ? PackBuffer.Get(ref t_packA, SgemmPrepacked.PackedALength(MC, KC)) : null;
            for (int pc = 0; pc < k; pc += kcMax)
            {
                int kc = Math.Min(kcMax, k - pc);
                float stepBeta = pc == 0 ? beta : 1f;
                for (int j = 0; j < t.Cols; j += NR)
                {
                    int cols = Math.Min(NR, t.Cols - j);
                    float* dst = packedB + (nint)j * kc;
                    if (g.BRows != null) SgemmPacking.PackBStripGathered(g.B, g.Ldb, g.BRows, t.J0 + j, cols, pc, kc, dst);
                    else SgemmPacking.PackBStrip(transB, g.B, g.Ldb, t.J0 + j, cols, pc, kc, dst);
                }
                for (int ic = 0; ic < t.Rows; ic += MC)
                {
                    int i0 = t.I0 + ic, mc = Math.Min(MC, t.Rows - ic);
                    float* aBlock;
                    nint rs, step, panelStride;
                    if (!transA)
                    {
                        aBlock = g.A + (nint)i0 * g.Lda + pc;
                        (rs, step, panelStride) = (g.Lda, 1, (nint)MR * g.Lda);
                    }
                    else
                    {
                        aBlock = packedA;
                        SgemmPacking.PackATransposed(g.A, g.Lda, g.M, i0, mc, pc, kc, aBlock);
                        (rs, step, panelStride) = (1, MR, (nint)MR * kc);
                    }
                    for (int j = 0; j < t.Cols; j += NR)
                    {
                        int cols = Math.Min(NR, t.Cols - j);
                        float* bPanel = packedB + (nint)j * kc;
                        float* cBase = g.C + (nint)i0 * g.Ldc + t.J0 + j;
                        for (int ir = 0; ir < mc; ir += MR)
                            SgemmMicroKernels.Tile(kernel, kc, aBlock + ir / MR * panelStride, rs, step, bPanel, cBase + (nint)ir * g.Ldc, g.Ldc,
                                Math.Min(MR, mc - ir), cols, alpha, stepBeta);
                    }
                }
            }
        }
    }
}
