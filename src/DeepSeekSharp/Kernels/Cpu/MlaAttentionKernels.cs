using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Causal multi-head attention in MLA's training form, computed per (document, head) in tiles of query rows so no
/// T×T matrix is ever held (only a tile of <see cref="TileRows"/> × T scores). Keys are assembled per head as
/// [k_nope ; k_pe] where k_pe is shared by every head (model.md, MLA). A document (a whole sequence, or one of the
/// examples packed into it: <see cref="MlaAttentionShape.Documents"/>) is computed exactly as if it were a sequence of
/// its own, tiles starting at its first row, so a packed example gets the same bits as the example alone.
/// Layouts: q [B, T, H, dn+dr], kvb [B, T, H, dn+dv], kpe [B, T, dr], o [B, T, H, dv], logSumExp [B, H, T].
/// </summary>
internal static class MlaAttentionKernels
{
    /// <summary>Query rows per tile; equal to the micro-kernel's strip width, so a transposed score tile is one packed B strip.</summary>
    public const int TileRows = SgemmMicroKernels.NR;

    public static void Forward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> logSumExp, WorkerPool? pool)
    {
        var shape = s;
        unsafe
        {
            fixed (float* pq = q) fixed (float* pkvb = kvb) fixed (float* pkpe = kpe) fixed (float* po = o) fixed (float* plse = logSumExp)
            {
                nint iq = (nint)pq, ikvb = (nint)pkvb, ikpe = (nint)pkpe, io = (nint)po, ilse = (nint)plse;
                int qLen = q.Length, kvbLen = kvb.Length, kpeLen = kpe.Length, oLen = o.Length, lseLen = logSumExp.Length;
                CpuParallel.ForRanges(s.DocumentCount * s.Heads, 1, pool, (start, end) =>
                {
                    var scratch = new HeadScratch(shape, backward: false);
                    try
                    {
                        for (int dh = start; dh < end; dh++)
                            ForwardHead(shape, shape.Document(dh / shape.Heads), dh % shape.Heads,
                                new ReadOnlySpan<float>((float*)iq, qLen), new ReadOnlySpan<float>((float*)ikvb, kvbLen),
                                new ReadOnlySpan<float>((float*)ikpe, kpeLen), new Span<float>((float*)io, oLen),
                                new Span<float>((float*)ilse, lseLen), scratch);
                    }
                    finally { scratch.Return(); }
                });
            }
        }
    }

    public static void Backward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpe, WorkerPool? pool)
    {
        var shape = s;
        int perHeadKpe = s.SeqLen * s.RopeDim;
        // k_pe is shared by all heads: each head accumulates its own partial, summed afterwards.
        float[] dkpePartial = ArrayPool<float>.Shared.Rent(s.Batch * s.Heads * perHeadKpe);
        Array.Clear(dkpePartial, 0, s.Batch * s.Heads * perHeadKpe);
        try
        {
            unsafe
            {
                fixed (float* pq = q) fixed (float* pkvb = kvb) fixed (float* pkpe = kpe) fixed (float* plse = logSumExp) fixed (float* pdo = dO)
                fixed (float* pdq = dq) fixed (float* pdkvb = dkvb)
                {
                    nint iq = (nint)pq, ikvb = (nint)pkvb, ikpe = (nint)pkpe, ilse = (nint)plse, ido = (nint)pdo, idq = (nint)pdq, idkvb = (nint)pdkvb;
                    int qLen = q.Length, kvbLen = kvb.Length, kpeLen = kpe.Length, lseLen = logSumExp.Length, doLen = dO.Length;
                    CpuParallel.ForRanges(s.DocumentCount * s.Heads, 1, pool, (start, end) =>
                    {
                        var scratch = new HeadScratch(shape, backward: true);
                        try
                        {
                            for (int dh = start; dh < end; dh++)
                            {
                                var doc = shape.Document(dh / shape.Heads);
                                int h = dh % shape.Heads, b = doc.Start / shape.SeqLen;
                                // Each (sequence, head) has its own k_pe partial; a document owns its rows of it.
                                var partial = dkpePartial.AsSpan((b * shape.Heads + h) * perHeadKpe + (doc.Start - b * shape.SeqLen) * shape.RopeDim,
                                    doc.Length * shape.RopeDim);
                                BackwardHead(shape, doc, h,
                                    new ReadOnlySpan<float>((float*)iq, qLen), new ReadOnlySpan<float>((float*)ikvb, kvbLen),
                                    new ReadOnlySpan<float>((float*)ikpe, kpeLen), new ReadOnlySpan<float>((float*)ilse, lseLen),
                                    new ReadOnlySpan<float>((float*)ido, doLen), new Span<float>((float*)idq, qLen),
                                    new Span<float>((float*)idkvb, kvbLen), partial, scratch);
                            }
                        }
                        finally { scratch.Return(); }
                    });
                }
            }
            for (int b = 0; b < s.Batch; b++)
            {
                var target = dkpe.Slice(b * perHeadKpe, perHeadKpe);
                for (int h = 0; h < s.Heads; h++)
                    TensorPrimitives.Add(target, dkpePartial.AsSpan((b * s.Heads + h) * perHeadKpe, perHeadKpe), target);
            }
        }
        finally { ArrayPool<float>.Shared.Return(dkpePartial); }
    }

    /// <summary>
    /// Per-worker buffers: one head's keys as rows, tiles of scores and the tile operands; the forward also holds packed
    /// Vᵀ panels, the backward packed Kᵀ panels, a second score tile and the dK accumulator. What a direction does not
    /// use is not rented (empty).
    /// </summary>
    private sealed class HeadScratch
    {
        public readonly float[] K, S, OutTile, QTile;
        public readonly float[] PackedV = [], Inv = [];                                                   // forward
        public readonly float[] PackedKt = [], P2 = [], DK = [], DoTile = [], QRows = [], DoRows = [], LseTile = []; // backward

        public HeadScratch(in MlaAttentionShape s, bool backward)
        {
            var pool = ArrayPool<float>.Shared;
            int t = s.SeqLen;
            K = pool.Rent(t * s.QDim);
            S = pool.Rent(TileRows * t);
            OutTile = pool.Rent((backward ? s.QDim : s.VDim) * TileRows);
            QTile = pool.Rent(SgemmPrepacked.PackedBLength(TileRows, s.QDim));
            if (!backward)
            {
                PackedV = pool.Rent(SgemmPrepacked.PackedALength(s.VDim, t));
                Inv = pool.Rent(TileRows);
                return;
            }
            PackedKt = pool.Rent(SgemmPrepacked.PackedALength(s.QDim, t));
            P2 = pool.Rent(TileRows * t);
            DK = pool.Rent(t * s.QDim);
            DoTile = pool.Rent(SgemmPrepacked.PackedBLength(TileRows, s.VDim));
            QRows = pool.Rent(SgemmPrepacked.PackedBLength(s.QDim, TileRows));
            DoRows = pool.Rent(SgemmPrepacked.PackedBLength(s.VDim, TileRows));
            LseTile = pool.Rent(TileRows);
        }

        public void Return()
        {
            var pool = ArrayPool<float>.Shared;
            foreach (var a in new[] { K, S, OutTile, QTile, PackedV, Inv, PackedKt, P2, DK, DoTile, QRows, DoRows, LseTile })
                if (a.Length > 0) pool.Return(a);
        }
    }

    /// <summary>
    /// One (document, head) of the forward, in tiles of 64 queries computed transposed: Sᵀ[keys, 64] = scale · K · Q_tileᵀ,
    /// so that the softmax runs down the key axis with every query in its own SIMD lane (no per-row horizontal
    /// reductions or per-row library calls), and Sᵀ, overwritten by P, is already a packed 64-wide B strip for
    /// O_tileᵀ[dv, 64] = Vᵀ · P: no packing of the probabilities at all.
    /// </summary>
    private static unsafe void ForwardHead(in MlaAttentionShape s, (int Start, int Length) doc, int h, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb,
        ReadOnlySpan<float> kpe, Span<float> o, Span<float> lse, HeadScratch w)
    {
        int t = doc.Length, dq = s.QDim, dn = s.NopeDim, dr = s.RopeDim, dv = s.VDim, qStride = s.Heads * dq, kvStride = s.Heads * s.KvbDim;
        long tok0 = doc.Start;
        int b = doc.Start / s.SeqLen, first = doc.Start - b * s.SeqLen;
        fixed (float* pq = q) fixed (float* pkvb = kvb) fixed (float* pkpe = kpe) fixed (float* pkc = w.K) fixed (float* pv = w.PackedV)
        fixed (float* ps = w.S) fixed (float* pqt = w.QTile) fixed (float* pot = w.OutTile) fixed (float* po = o) fixed (float* pinv = w.Inv)
        fixed (float* plse = lse)
        {
            float* qHead = pq + (tok0 * s.Heads + h) * dq, kvbHead = pkvb + (tok0 * s.Heads + h) * s.KvbDim;
            AssembleKeys(s, t, kvbHead, pkpe + tok0 * dr, pkc);
            SgemmPrepacked.PackATransposed(kvbHead + dn, kvStride, dv, t, pv); // Vᵀ [dv, T]
            float* lseHead = plse + (long)(b * s.Heads + h) * s.SeqLen + first;
            for (int r0 = 0; r0 < t; r0 += TileRows)
            {
                int rows = Math.Min(TileRows, t - r0);
                int cols = r0 + rows; // causal: keys 0..r0+rows-1 are all this tile can see
                SgemmPacking.PackBStrip(true, qHead + (long)r0 * qStride, qStride, 0, rows, 0, dq, pqt); // Q_tileᵀ, zero past rows
                SgemmPrepacked.MultiplyPackedB(cols, TileRows, dq, s.Scale, pkc, dq, pqt, 0f, ps, TileRows);
                SoftmaxDownKeys(ps, cols, r0, rows, pinv, lseHead + r0);
                SgemmPrepacked.MultiplyPackedAStrip(dv, cols, t, 1f, pv, ps, 0f, pot, TileRows);
                WriteTransposed(pot, TileRows, dv, rows, po + ((tok0 + r0) * s.Heads + h) * dv, s.Heads * dv, pinv);
            }
        }
    }

    /// <summary>Keys as contiguous rows [T, dq] = [k_nope ; k_pe] (k_pe shared by every head).</summary>
    private static unsafe void AssembleKeys(in MlaAttentionShape s, int rows, float* kvbHead, float* kpeBatch, float* keys)
    {
        int dq = s.QDim, dn = s.NopeDim, dr = s.RopeDim, kvStride = s.Heads * s.KvbDim;
        for (int i = 0; i < rows; i++)
        {
            CopyShort(kvbHead + (long)i * kvStride, keys + (long)i * dq, dn);
            CopyShort(kpeBatch + (long)i * dr, keys + (long)i * dq + dn, dr);
        }
    }

    /// <summary>Copies a head-sized run of floats (tens of them) without a library call per row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void CopyShort(float* src, float* dst, int count)
    {
        int j = 0;
        for (; j + 16 <= count; j += 16) Vector512.Load(src + j).Store(dst + j);
        for (; j < count; j++) dst[j] = src[j];
    }

    /// <summary>
    /// Causal softmax of a transposed score tile st[cols, 64] (row j = key j, lane c = query r0 + c) in place: query
    /// r0 + c sees keys j ≤ r0 + c, so rows below r0 are whole and the diagonal block is masked per lane. Writes
    /// unnormalised probabilities exp(s − max), 1 / Σ into <paramref name="inv"/> (applied to the dv-wide output
    /// instead of the longer probability column) and max + log Σ into <paramref name="lse"/> for the backward.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void SoftmaxDownKeys(float* st, int cols, int r0, int rows, float* inv, float* lse)
    {
        var minus = Vector512.Create(float.NegativeInfinity);
        var lane = Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        Vector512<float> m0 = minus, m1 = minus, m2 = minus, m3 = minus;
        for (int j = 0; j < r0; j++)
        {
            float* row = st + (nint)j * TileRows;
            m0 = Vector512.Max(m0, Vector512.Load(row)); m1 = Vector512.Max(m1, Vector512.Load(row + 16));
            m2 = Vector512.Max(m2, Vector512.Load(row + 32)); m3 = Vector512.Max(m3, Vector512.Load(row + 48));
        }
        for (int j = r0; j < cols; j++)
        {
            float* row = st + (nint)j * TileRows;
            var first = Vector512.Create((float)(j - r0)); // lanes c ≥ j − r0 see key j
            m0 = Vector512.Max(m0, Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane, first), Vector512.Load(row), minus));
            m1 = Vector512.Max(m1, Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(16f), first), Vector512.Load(row + 16), minus));
            m2 = Vector512.Max(m2, Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(32f), first), Vector512.Load(row + 32), minus));
            m3 = Vector512.Max(m3, Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(48f), first), Vector512.Load(row + 48), minus));
        }
        Vector512<float> s0 = Vector512<float>.Zero, s1 = s0, s2 = s0, s3 = s0;
        for (int j = 0; j < cols; j++)
        {
            float* row = st + (nint)j * TileRows;
            var e0 = VectorExp.Exp(Vector512.Load(row) - m0);
            var e1 = VectorExp.Exp(Vector512.Load(row + 16) - m1);
            var e2 = VectorExp.Exp(Vector512.Load(row + 32) - m2);
            var e3 = VectorExp.Exp(Vector512.Load(row + 48) - m3);
            if (j >= r0)
            {
                var first = Vector512.Create((float)(j - r0));
                e0 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane, first), e0, Vector512<float>.Zero);
                e1 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(16f), first), e1, Vector512<float>.Zero);
                e2 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(32f), first), e2, Vector512<float>.Zero);
                e3 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(48f), first), e3, Vector512<float>.Zero);
            }
            e0.Store(row); e1.Store(row + 16); e2.Store(row + 32); e3.Store(row + 48);
            s0 += e0; s1 += e1; s2 += e2; s3 += e3;
        }
        float* sums = stackalloc float[TileRows];
        float* maxes = stackalloc float[TileRows];
        s0.Store(sums); s1.Store(sums + 16); s2.Store(sums + 32); s3.Store(sums + 48);
        m0.Store(maxes); m1.Store(maxes + 16); m2.Store(maxes + 32); m3.Store(maxes + 48);
        for (int c = 0; c < rows; c++)
        {
            inv[c] = 1f / sums[c];
            lse[c] = maxes[c] + MathF.Log(sums[c]);
        }
    }

    /// <summary>
    /// One (document, head) of the backward, in the forward's transposed tiles: Sᵀ = scale · K · Q_tileᵀ and
    /// dPᵀ = V · dO_tileᵀ ([keys, 64], every query in its own SIMD lane), the softmax backward down the keys
    /// (<see cref="SoftmaxBackwardDownKeys"/>), then three products that read the tiles where they lie: dQ_tileᵀ =
    /// scale · Kᵀ · dSᵀ (dSᵀ is a ready packed B strip), dV += Pᵀ · dO_tile and dK += scale · dSᵀ · Q_tile (Pᵀ and dSᵀ
    /// are row-major A operands, read in place). Nothing of the tiles is packed or transposed; only the 64-row tiles
    /// of Q and dO are packed, twice each (as strips and as rows).
    /// </summary>
    private static unsafe void BackwardHead(in MlaAttentionShape s, (int Start, int Length) doc, int h, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb,
        ReadOnlySpan<float> kpe, ReadOnlySpan<float> lse, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpeHead, HeadScratch w)
    {
        int t = doc.Length, dqDim = s.QDim, dn = s.NopeDim, dr = s.RopeDim, dv = s.VDim, kvbDim = s.KvbDim;
        int qStride = s.Heads * dqDim, kvStride = s.Heads * kvbDim, oStride = s.Heads * dv;
        long tok0 = doc.Start;
        int b = doc.Start / s.SeqLen, first = doc.Start - b * s.SeqLen;
        fixed (float* pq = q) fixed (float* pkvb = kvb) fixed (float* pkpe = kpe) fixed (float* pdo = dO) fixed (float* plse = lse)
        fixed (float* pkt = w.PackedKt) fixed (float* pkc = w.K) fixed (float* ps = w.S) fixed (float* pp2 = w.P2) fixed (float* pdk = w.DK)
        fixed (float* pot = w.OutTile) fixed (float* pqt = w.QTile) fixed (float* pdot = w.DoTile) fixed (float* pqr = w.QRows)
        fixed (float* pdor = w.DoRows) fixed (float* plt = w.LseTile)
        fixed (float* pdq = dq) fixed (float* pdkvb = dkvb) fixed (float* pdkpe = dkpeHead)
        {
            long headRow = tok0 * s.Heads + h;
            float* qHead = pq + headRow * dqDim, kvbHead = pkvb + headRow * kvbDim, doHead = pdo + headRow * dv;
            float* lseHead = plse + (long)(b * s.Heads + h) * s.SeqLen + first;
            // Keys as rows (A of Sᵀ) and as Kᵀ panels (A of dQᵀ); values are read in place (A of dPᵀ).
            AssembleKeys(s, t, kvbHead, pkpe + tok0 * dr, pkc);
            SgemmPrepacked.PackATransposed(pkc, dqDim, dqDim, t, pkt);
            new Span<float>(pdk, t * dqDim).Clear();
            for (int r0 = 0; r0 < t; r0 += TileRows)
            {
                int rows = Math.Min(TileRows, t - r0);
                int cols = r0 + rows;
                float* qTile = qHead + (long)r0 * qStride, doTile = doHead + (long)r0 * oStride;
                SgemmPacking.PackBStrip(true, qTile, qStride, 0, rows, 0, dqDim, pqt);   // Q_tileᵀ, zero past rows
                SgemmPacking.PackBStrip(true, doTile, oStride, 0, rows, 0, dv, pdot);    // dO_tileᵀ, zero past rows
                SgemmPrepacked.PackB(false, qTile, qStride, dqDim, rows, 0, rows, pqr);  // Q_tile as rows of depth
                SgemmPrepacked.PackB(false, doTile, oStride, dv, rows, 0, rows, pdor);   // dO_tile likewise
                SgemmPrepacked.MultiplyPackedB(cols, TileRows, dqDim, s.Scale, pkc, dqDim, pqt, 0f, ps, TileRows);
                SgemmPrepacked.MultiplyPackedB(cols, TileRows, dv, 1f, kvbHead + dn, kvStride, pdot, 0f, pp2, TileRows);
                // Lanes past the last query get log-sum-exp +inf: their probabilities, and so their gradients, are 0.
                for (int c = 0; c < TileRows; c++) plt[c] = c < rows ? lseHead[r0 + c] : float.PositiveInfinity;
                SoftmaxBackwardDownKeys(ps, pp2, cols, r0, plt);
                SgemmPrepacked.MultiplyPackedAStrip(dqDim, cols, t, s.Scale, pkt, pp2, 0f, pot, TileRows);
                WriteTransposed(pot, TileRows, dqDim, rows, pdq + (headRow + (long)r0 * s.Heads) * dqDim, qStride);
                SgemmPrepacked.MultiplyPackedB(cols, dv, rows, 1f, ps, TileRows, pdor, 1f, pdkvb + headRow * kvbDim + dn, kvStride);
                SgemmPrepacked.MultiplyPackedB(cols, dqDim, rows, s.Scale, pp2, TileRows, pqr, 1f, pdk, dqDim);
            }
            // dK = [dk_nope ; dk_pe]: the first part goes to kv_b's rows, the second to this head's share of k_pe.
            for (int j = 0; j < t; j++)
            {
                float* src = pdk + (long)j * dqDim;
                float* dst = pdkvb + (headRow + (long)j * s.Heads) * kvbDim;
                TensorPrimitives.Add(new ReadOnlySpan<float>(src, dn), new ReadOnlySpan<float>(dst, dn), new Span<float>(dst, dn));
                CopyShort(src + dn, pdkpe + (long)j * dr, dr);
            }
        }
    }

    /// <summary>
    /// Softmax backward of a transposed tile in place (row j = key j, lane c = query r0 + c, causal as in
    /// <see cref="SoftmaxDownKeys"/>): st holds scaled scores Sᵀ and becomes P = exp(S − lse); dpt holds dPᵀ and becomes
    /// dSᵀ = P ⊙ (dP − Σ_keys P ⊙ dP), the per-query sum accumulated down the keys in each lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void SoftmaxBackwardDownKeys(float* st, float* dpt, int cols, int r0, float* lseTile)
    {
        var lane = Vector512<float>.Indices;
        Vector512<float> l0 = Vector512.Load(lseTile), l1 = Vector512.Load(lseTile + 16), l2 = Vector512.Load(lseTile + 32), l3 = Vector512.Load(lseTile + 48);
        Vector512<float> d0 = Vector512<float>.Zero, d1 = d0, d2 = d0, d3 = d0;
        for (int j = 0; j < cols; j++)
        {
            float* row = st + (nint)j * TileRows, drow = dpt + (nint)j * TileRows;
            var e0 = VectorExp.Exp(Vector512.Load(row) - l0);
            var e1 = VectorExp.Exp(Vector512.Load(row + 16) - l1);
            var e2 = VectorExp.Exp(Vector512.Load(row + 32) - l2);
            var e3 = VectorExp.Exp(Vector512.Load(row + 48) - l3);
            if (j >= r0)
            {
                var first = Vector512.Create((float)(j - r0)); // lanes c ≥ j − r0 see key j
                e0 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane, first), e0, Vector512<float>.Zero);
                e1 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(16f), first), e1, Vector512<float>.Zero);
                e2 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(32f), first), e2, Vector512<float>.Zero);
                e3 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane + Vector512.Create(48f), first), e3, Vector512<float>.Zero);
            }
            e0.Store(row); e1.Store(row + 16); e2.Store(row + 32); e3.Store(row + 48);
            d0 = Vector512.FusedMultiplyAdd(e0, Vector512.Load(drow), d0);
            d1 = Vector512.FusedMultiplyAdd(e1, Vector512.Load(drow + 16), d1);
            d2 = Vector512.FusedMultiplyAdd(e2, Vector512.Load(drow + 32), d2);
            d3 = Vector512.FusedMultiplyAdd(e3, Vector512.Load(drow + 48), d3);
        }
        for (int j = 0; j < cols; j++)
        {
            float* row = st + (nint)j * TileRows, drow = dpt + (nint)j * TileRows;
            ((Vector512.Load(drow) - d0) * Vector512.Load(row)).Store(drow);
            ((Vector512.Load(drow + 16) - d1) * Vector512.Load(row + 16)).Store(drow + 16);
            ((Vector512.Load(drow + 32) - d2) * Vector512.Load(row + 32)).Store(drow + 32);
            ((Vector512.Load(drow + 48) - d3) * Vector512.Load(row + 48)).Store(drow + 48);
        }
    }

    /// <summary>
    /// Writes a transposed accumulator back to token rows, 8 × 8 AVX transposes with scalar edges: for c &lt; cols,
    /// i &lt; rows, dst[i·dstStride + c] = srcT[c·ldSrc + i] · rowScale[i] when <paramref name="rowScale"/> is given,
    /// else dst[i·dstStride + c] += srcT[c·ldSrc + i].
    /// </summary>
    private static unsafe void WriteTransposed(float* srcT, int ldSrc, int cols, int rows, float* dst, int dstStride, float* rowScale = null)
    {
        int c8 = Avx.IsSupported ? cols & ~7 : 0, r8 = Avx.IsSupported ? rows & ~7 : 0;
        Span<Vector256<float>> o = stackalloc Vector256<float>[8];
        for (int i = 0; i < r8; i += 8)
            for (int c = 0; c < c8; c += 8)
            {
                float* sp = srcT + (nint)c * ldSrc + i;
                SgemmPacking.Transpose8x8(Vector256.Load(sp), Vector256.Load(sp + ldSrc), Vector256.Load(sp + 2 * (nint)ldSrc),
                    Vector256.Load(sp + 3 * (nint)ldSrc), Vector256.Load(sp + 4 * (nint)ldSrc), Vector256.Load(sp + 5 * (nint)ldSrc),
                    Vector256.Load(sp + 6 * (nint)ldSrc), Vector256.Load(sp + 7 * (nint)ldSrc),
                    out o[0], out o[1], out o[2], out o[3], out o[4], out o[5], out o[6], out o[7]);
                float* d = dst + (nint)i * dstStride + c;
                for (int r = 0; r < 8; r++, d += dstStride)
                    (rowScale is null ? Vector256.Load(d) + o[r] : o[r] * rowScale[i + r]).Store(d);
            }
        for (int i = 0; i < rows; i++)
        {
            float* d = dst + (nint)i * dstStride;
            for (int c = i < r8 ? c8 : 0; c < cols; c++)
            {
                float v = srcT[(nint)c * ldSrc + i];
                d[c] = rowScale is null ? d[c] + v : v * rowScale[i];
            }
        }
    }
}
