using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// One product of <see cref="BlisSgemm.MultiplyGroupedE4M3"/>: <c>C = A · op(B)</c> with A [m, k] and B (op(B) = Bᵀ,
/// B [n, k], when transposed; B [k, n] otherwise) held as E4M3 codes with tile scales, C [m, n] fp32 at row stride ldc.
/// </summary>
internal readonly unsafe struct E4M3SgemmGroup(int m, int n, int k, E4M3Operand a, E4M3Operand b, float* c, int ldc)
{
    public int M { get; } = m;
    public int N { get; } = n;
    public int K { get; } = k;
    public E4M3Operand A { get; } = a;
    public E4M3Operand B { get; } = b;
    public float* C { get; } = c;
    public int Ldc { get; } = ldc;
}

/// <summary>
/// The grouped driver (<see cref="BlisSgemm.MultiplyGroupedCore"/>: tasks of (group, rows, columns), largest first,
/// claimed dynamically) on E4M3 operands, the forward GEMMs of FP8 routed experts: each task decodes its B strips and
/// its A row blocks where the fp32 driver would copy them (<see cref="E4M3Packing"/>), so no fp32 copy of either exists.
/// A product's values and the order of its additions are those of <see cref="SgemmBlocked.MultiplyE4M3"/> on the same
/// shape (the same depth blocks, the same decoded values at stride kc, the same micro-kernel), so an expert's output is
/// bit for bit the one its per-expert FP8 Linear computes.
/// </summary>
public static unsafe partial class BlisSgemm
{
    /// <summary>For every group g: <c>C_g = A_g · op(B_g)</c> (C is overwritten). Groups must not write overlapping C.</summary>
    internal static void MultiplyGroupedE4M3(WorkerPool? pool, BlisSgemmKernel kernel, bool transB, ReadOnlySpan<E4M3SgemmGroup> groups)
    {
        long total = 0;
        int[] shapes = System.Buffers.ArrayPool<int>.Shared.Rent(Math.Max(1, 3 * groups.Length));
        for (int gi = 0; gi < groups.Length; gi++)
        {
            var g = groups[gi];
            if (g.M > 0 && g.N > 0 && g.K == 0) ScaleC(g.M, g.N, 0f, g.C, g.Ldc);
            (shapes[3 * gi], shapes[3 * gi + 1], shapes[3 * gi + 2]) = (g.M, g.N, g.K);
            if (g.M > 0 && g.N > 0) total += (long)g.M * g.N * g.K;
        }
        int threads = pool?.AvailableThreads ?? 1;
        GroupedTask[] rented = PlanGroupedTasks(threads, shapes.AsSpan(0, 3 * groups.Length), total, out int count);
        System.Buffers.ArrayPool<int>.Shared.Return(shapes);
        try
        {
            fixed (E4M3SgemmGroup* pg = groups)
            {
                var job = new GroupedE4M3Job(SgemmMicroKernels.Resolve(kernel), transB, pg, rented);
                if (pool is null || threads == 1 || count <= 1)
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

    private sealed class GroupedE4M3Job(BlisSgemmKernel kernel, bool transB, E4M3SgemmGroup* groups, GroupedTask[] tasks) : IWorkerTask
    {
        private const int MR = SgemmMicroKernels.MR, NR = SgemmMicroKernels.NR, MC = SgemmBlocked.MC, KC = SgemmBlocked.KC;

        [ThreadStatic] private static PackBuffer? t_decodedA;
        [ThreadStatic] private static PackBuffer? t_packB;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int taskIndex)
        {
            var t = tasks[taskIndex];
            E4M3SgemmGroup g = groups[t.Group];
            int k = g.K, kcMax = SgemmBlocked.DepthBlock(k);
            float* packedB = PackBuffer.Get(ref t_packB, SgemmPrepacked.PackedBLength(t.Cols, kcMax));
            // A row block decoded row-major at stride kc, read like an A in place (as SgemmBlocked reads an E4M3 A).
            float* aBlock = PackBuffer.Get(ref t_decodedA, (MC + MR - 1) / MR * MR * KC);
            for (int pc = 0; pc < k; pc += kcMax)
            {
                int kc = Math.Min(kcMax, k - pc);
                float stepBeta = pc == 0 ? 0f : 1f;
                for (int j = 0; j < t.Cols; j += NR)
                    E4M3Packing.PackBStrip(transB, g.B, t.J0 + j, Math.Min(NR, t.Cols - j), pc, kc, packedB + (nint)j * kc);
                for (int ic = 0; ic < t.Rows; ic += MC)
                {
                    int i0 = t.I0 + ic, mc = Math.Min(MC, t.Rows - ic);
                    E4M3Packing.DecodeABlock(g.A, i0, mc, pc, kc, aBlock);
                    for (int j = 0; j < t.Cols; j += NR)
                    {
                        int cols = Math.Min(NR, t.Cols - j);
                        float* bPanel = packedB + (nint)j * kc;
                        float* cBase = g.C + (nint)i0 * g.Ldc + t.J0 + j;
                        for (int ir = 0; ir < mc; ir += MR)
                            SgemmMicroKernels.Tile(kernel, kc, aBlock + (nint)ir * kc, kc, 1, bPanel, cBase + (nint)ir * g.Ldc, g.Ldc,
                                Math.Min(MR, mc - ir), cols, 1f, stepBeta);
                    }
                }
            }
        }
    }
}
