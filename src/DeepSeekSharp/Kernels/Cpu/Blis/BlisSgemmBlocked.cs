using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// The BLIS-style blocked SGEMM driver. Loops: jc over N (NC columns) → pc over K (KC depth; B block packed once,
/// in parallel, into 64-wide strips) → parallel tasks over (MC-row block of A, group of B strips); each task runs the
/// 6×64 micro-kernel over its tiles, reading A in place (or, if A is transposed, from 6-row panels it packs into a
/// thread-local buffer).
/// </summary>
internal sealed unsafe class SgemmBlocked : IWorkerTask
{
    public const int NC = 2048;
    public const int KC = 512;
    public const int MC = 96;
    private const int MR = SgemmMicroKernels.MR;
    private const int NR = SgemmMicroKernels.NR;

    [ThreadStatic] private static PackBuffer? t_packA;
    [ThreadStatic] private static PackBuffer? t_decodedA;
    [ThreadStatic] private static PackBuffer? t_packB;
    [ThreadStatic] private static SgemmBlocked? t_cachedJob;

    // The whole problem.
    private bool _transA, _transB;
    private int _m, _lda, _ldb, _ldc;
    private float _alpha;
    private float* _a, _b, _c;
    // E4M3 operands decoded during packing instead of fp32 ones (MultiplyE4M3); Codes == null when not in use.
    private E4M3Operand _aCodes, _bCodes;
    private BlisSgemmKernel _kernel;
    // The current (jc, pc) block.
    private bool _packPhase, _decodePhase;
    // E4M3 A blocks decoded once per depth block for all strip groups (null: each task decodes its own block).
    private float* _decodedA;
    private int _jc, _nc, _pc, _kc, _mBlocks, _nStrips, _stripsPerGroup;
    private float _beta;
    private float* _packedB;

    /// <summary>Runs the blocked algorithm. Requires m, n, k ≥ 1 and alpha ≠ 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Multiply(WorkerPool? pool, BlisSgemmKernel kernel, bool transA, bool transB, int m, int n, int k,
        float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, float* prepackedB = null)
    {
        SgemmBlocked job = t_cachedJob ?? new SgemmBlocked();
        t_cachedJob = null; // a re-entrant call on this thread gets its own job
        try
        {
            job.Run(pool, kernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, prepackedB);
        }
        finally
        {
            job._a = job._b = job._c = job._packedB = null;
            t_cachedJob = job;
        }
    }

    /// <summary>
    /// C = op(A) · op(B) + beta · C with A (op(A) = Aᵀ, A [k, m], when transposed; A [m, k] otherwise) and B (op(B) = Bᵀ,
    /// B [n, k], when transposed; B [k, n] otherwise) held as E4M3 codes with tile scales: each is decoded where the
    /// driver packs it (A's row block or panels into a thread-local buffer, B into its strips), so no fp32 copy of either
    /// exists. Bit-identical to dequantising both and
    /// running <see cref="Multiply"/> on the same shape through this driver: the same values reach the same micro-kernel.
    /// </summary>
    public static void MultiplyE4M3(WorkerPool? pool, BlisSgemmKernel kernel, bool transA, bool transB, int m, int n, int k,
        in E4M3Operand a, in E4M3Operand b, float beta, float* c, int ldc)
    {
        SgemmBlocked job = t_cachedJob ?? new SgemmBlocked();
        t_cachedJob = null;
        try
        {
            job._aCodes = a;
            job._bCodes = b;
            job.Run(pool, kernel, transA, transB, m, n, k, 1f, null, transA ? Math.Max(1, m) : Math.Max(1, k), null,
                transB ? Math.Max(1, k) : Math.Max(1, n), beta, c, ldc, null);
        }
        finally
        {
            job._a = job._b = job._c = job._packedB = null;
            job._aCodes = job._bCodes = default;
            t_cachedJob = job;
        }
    }

    /// <summary>Depth blocks the driver uses for depth k: ceil(k / KC) blocks of (at most) this many, balanced.</summary>
    public static int DepthBlock(int k)
    {
        int kBlocks = (k + KC - 1) / KC;
        return (k + kBlocks - 1) / kBlocks;
    }

    /// <summary>
    /// Packs all of op(B) (k × n) in the layout the driver reads when given it pre-packed: depth block after depth
    /// block (<see cref="DepthBlock"/>), each as ceil(n/64) strips of kc × 64; the block starting at depth pc begins
    /// at pc · RoundUp(n, 64). Strips are packed in parallel.
    /// </summary>
    public static void PackAllB(WorkerPool? pool, bool transB, float* b, int ldb, int n, int k, float* dst)
    {
        int kcMax = DepthBlock(k), nRounded = RoundUp(n, NR), strips = nRounded / NR;
        for (int pc = 0; pc < k; pc += kcMax)
        {
            int kc = Math.Min(kcMax, k - pc);
            float* block = dst + (nint)pc * nRounded;
            var task = new PackAllTask(transB, b, ldb, n, pc, kc, block);
            if (pool is null || strips == 1) for (int s = 0; s < strips; s++) task.Execute(s);
            else pool.Run(strips, task);
        }
    }

    private sealed class PackAllTask(bool transB, float* b, int ldb, int n, int pc, int kc, float* block) : IWorkerTask
    {
        public void Execute(int strip)
        {
            int j = strip * NR;
            SgemmPacking.PackBStrip(transB, b, ldb, j, Math.Min(NR, n - j), pc, kc, block + (nint)j * kc);
        }
    }

    private void Run(WorkerPool? pool, BlisSgemmKernel kernel, bool transA, bool transB, int m, int n, int k,
        float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, float* prepackedB)
    {
        (_transA, _transB, _m, _lda, _ldb, _ldc, _alpha) = (transA, transB, m, lda, ldb, ldc, alpha);
        _a = a;
        _b = b;
        _c = c;
        _kernel = SgemmMicroKernels.Resolve(kernel);
        int threads = pool?.AvailableThreads ?? 1;

        // Balanced blocks: 513 deep becomes 2 × 257 rather than 512 + 1.
        int kcMax = DepthBlock(k);
        int nBlocks = (n + NC - 1) / NC, ncMax = RoundUp((n + nBlocks - 1) / nBlocks, NR);
        float* ownPackedB = prepackedB is null ? PackBuffer.Get(ref t_packB, kcMax * ncMax) : null;
        int nRounded = RoundUp(n, NR);
        _mBlocks = (m + MC - 1) / MC;

        for (int jc = 0; jc < n; jc += ncMax)
        {
            _jc = jc;
            _nc = Math.Min(ncMax, n - jc);
            _nStrips = (_nc + NR - 1) / NR;
            int groups = 1;
            if (threads > 1 && _mBlocks < 4 * threads)
                groups = Math.Clamp((4 * threads + _mBlocks - 1) / _mBlocks, 1, _nStrips);
            _stripsPerGroup = (_nStrips + groups - 1) / groups;
            groups = (_nStrips + _stripsPerGroup - 1) / _stripsPerGroup;

            for (int pc = 0; pc < k; pc += kcMax)
            {
                _pc = pc;
                _kc = Math.Min(kcMax, k - pc);
                _beta = pc == 0 ? beta : 1f;
                if (prepackedB is null)
                {
                    _packedB = ownPackedB;
                    _packPhase = true;
                    Dispatch(pool, _nStrips);
                    _packPhase = false;
                }
                else
                {
                    // This (jc, pc) block's strips lie contiguously in the pre-packed operand (see PackAllB).
                    _packedB = prepackedB + (nint)pc * nRounded + (nint)jc * _kc;
                }
                // Several strip groups share each row block of an E4M3 A: decode every block once, up front, rather
                // than once per group.
                _decodedA = _aCodes.Codes is not null && groups > 1 ? PackBuffer.Get(ref t_decodedA, _mBlocks * ABlockFloats) : null;
                if (_decodedA is not null)
                {
                    _decodePhase = true;
                    Dispatch(pool, _mBlocks);
                    _decodePhase = false;
                }
                Dispatch(pool, _mBlocks * groups);
            }
        }
        _decodedA = null;
    }

    private const int ABlockFloats = (MC + MR - 1) / MR * MR * KC;

    /// <summary>Row block <paramref name="mBlock"/> of the E4M3 A, decoded (row-major at stride kc) or packed (transposed).</summary>
    private void DecodeABlock(int mBlock, float* dst)
    {
        int i0 = mBlock * MC, mc = Math.Min(MC, _m - i0);
        if (_transA) E4M3Packing.PackATransposed(_aCodes, i0, mc, _pc, _kc, dst);
        else E4M3Packing.DecodeABlock(_aCodes, i0, mc, _pc, _kc, dst);
    }

    private void Dispatch(WorkerPool? pool, int tasks)
    {
        if (pool is null || tasks == 1)
            for (int i = 0; i < tasks; i++) Execute(i);
        else
            pool.Run(tasks, this);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Execute(int taskIndex)
    {
        if (_packPhase)
        {
            int j = taskIndex * NR;
            if (_bCodes.Codes is not null) E4M3Packing.PackBStrip(_transB, _bCodes, _jc + j, Math.Min(NR, _nc - j), _pc, _kc, _packedB + (nint)j * _kc);
            else SgemmPacking.PackBStrip(_transB, _b, _ldb, _jc + j, Math.Min(NR, _nc - j), _pc, _kc, _packedB + (nint)j * _kc);
        }
        else if (_decodePhase)
        {
            DecodeABlock(taskIndex, _decodedA + (nint)taskIndex * ABlockFloats);
        }
        else
        {
            ComputeTask(taskIndex % _mBlocks, taskIndex / _mBlocks);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ComputeTask(int mBlock, int group)
    {
        int i0 = mBlock * MC, mc = Math.Min(MC, _m - i0), kc = _kc;
        // op(A) not transposed is read in place (rows at stride lda, the micro-kernel broadcasts from them); packing
        // it would be a transpose. Transposed A is packed into 6-row panels: cheap contiguous copies.
        float* aBlock;
        nint rs, step, panelStride;
        if (_aCodes.Codes is not null)
        {
            // An E4M3 A: its row block decoded at stride kc and read like an A in place, or packed into panels when
            // transposed; decoded up front when several strip groups share it.
            if (_decodedA is not null) aBlock = _decodedA + (nint)mBlock * ABlockFloats;
            else
            {
                aBlock = PackBuffer.Get(ref t_packA, ABlockFloats);
                DecodeABlock(mBlock, aBlock);
            }
            (rs, step, panelStride) = _transA ? (1, MR, (nint)MR * kc) : (kc, 1, (nint)MR * kc);
        }
        else if (!_transA)
        {
            aBlock = _a + (nint)i0 * _lda + _pc;
            (rs, step, panelStride) = (_lda, 1, (nint)MR * _lda);
        }
        else
        {
            aBlock = PackBuffer.Get(ref t_packA, RoundUp(MC, MR) * KC);
            SgemmPacking.PackATransposed(_a, _lda, _m, i0, mc, _pc, kc, aBlock);
            (rs, step, panelStride) = (1, MR, (nint)MR * kc);
        }

        int s0 = group * _stripsPerGroup, s1 = Math.Min(_nStrips, s0 + _stripsPerGroup);
        for (int s = s0; s < s1; s++)
        {
            int j = s * NR, cols = Math.Min(NR, _nc - j);
            float* bPanel = _packedB + (nint)j * kc;
            float* cBase = _c + (nint)i0 * _ldc + _jc + j;
            for (int ir = 0; ir < mc; ir += MR)
            {
                SgemmMicroKernels.Tile(_kernel, kc, aBlock + ir / MR * panelStride, rs, step, bPanel, cBase + (nint)ir * _ldc, _ldc,
                    Math.Min(MR, mc - ir), cols, _alpha, _beta);
            }
        }
    }

    private static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;
}
