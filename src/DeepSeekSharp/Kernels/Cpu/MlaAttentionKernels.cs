using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// Causal multi-head attention in MLA's training form, computed per (batch, head) in tiles of query rows so no
/// T×T matrix is ever held (only a tile of <see cref="TileRows"/> × T scores). Keys are assembled per head as
/// [k_nope ; k_pe] where k_pe is shared by every head (model.md, MLA).
/// Layouts: q [B, T, H, dn+dr], kvb [B, T, H, dn+dv], kpe [B, T, dr], o [B, T, H, dv], logSumExp [B, H, T].
/// </summary>
internal static class MlaAttentionKernels
{
    public const int TileRows = 64;

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
                CpuParallel.ForRanges(s.Batch * s.Heads, 1, pool, (start, end) =>
                {
                    var scratch = new HeadScratch(shape);
                    try
                    {
                        for (int bh = start; bh < end; bh++)
                            ForwardHead(shape, bh / shape.Heads, bh % shape.Heads,
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
                    CpuParallel.ForRanges(s.Batch * s.Heads, 1, pool, (start, end) =>
                    {
                        var scratch = new HeadScratch(shape);
                        try
                        {
                            for (int bh = start; bh < end; bh++)
                                BackwardHead(shape, bh / shape.Heads, bh % shape.Heads,
                                    new ReadOnlySpan<float>((float*)iq, qLen), new ReadOnlySpan<float>((float*)ikvb, kvbLen),
                                    new ReadOnlySpan<float>((float*)ikpe, kpeLen), new ReadOnlySpan<float>((float*)ilse, lseLen),
                                    new ReadOnlySpan<float>((float*)ido, doLen), new Span<float>((float*)idq, qLen),
                                    new Span<float>((float*)idkvb, kvbLen), dkpePartial.AsSpan(bh * perHeadKpe, perHeadKpe), scratch);
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

    /// <summary>Per-worker buffers: contiguous Q, K, V of one head and one tile of scores.</summary>
    private sealed class HeadScratch
    {
        public readonly float[] Q, K, V, S, P2, DQ, DK, DV, DO, Inv;

        public HeadScratch(in MlaAttentionShape s)
        {
            var pool = ArrayPool<float>.Shared;
            int t = s.SeqLen;
            Q = pool.Rent(t * s.QDim); K = pool.Rent(t * s.QDim); V = pool.Rent(t * s.VDim);
            S = pool.Rent(TileRows * t); P2 = pool.Rent(TileRows * t);
            DQ = pool.Rent(t * s.QDim); DK = pool.Rent(t * s.QDim); DV = pool.Rent(t * s.VDim); DO = pool.Rent(t * s.VDim);
            Inv = pool.Rent(TileRows);
        }

        public void Return()
        {
            var pool = ArrayPool<float>.Shared;
            foreach (var a in new[] { Q, K, V, S, P2, DQ, DK, DV, DO, Inv }) pool.Return(a);
        }
    }

    private static void Gather(in MlaAttentionShape s, int b, int h, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe, HeadScratch w)
    {
        int t = s.SeqLen, dq = s.QDim, dn = s.NopeDim, dr = s.RopeDim, dv = s.VDim, kvbDim = s.KvbDim;
        for (int i = 0; i < t; i++)
        {
            long tok = (long)b * t + i;
            q.Slice((int)((tok * s.Heads + h) * dq), dq).CopyTo(w.Q.AsSpan(i * dq, dq));
            var kvbRow = kvb.Slice((int)((tok * s.Heads + h) * kvbDim), kvbDim);
            kvbRow[..dn].CopyTo(w.K.AsSpan(i * dq, dn));
            kpe.Slice((int)(tok * dr), dr).CopyTo(w.K.AsSpan(i * dq + dn, dr));
            kvbRow.Slice(dn, dv).CopyTo(w.V.AsSpan(i * dv, dv));
        }
    }

    private static void ForwardHead(in MlaAttentionShape s, int b, int h, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> lse, HeadScratch w)
    {
        int t = s.SeqLen, dq = s.QDim, dv = s.VDim;
        Gather(s, b, h, q, kvb, kpe, w);
        for (int r0 = 0; r0 < t; r0 += TileRows)
        {
            int rows = Math.Min(TileRows, t - r0);
            int cols = r0 + rows; // causal: keys 0..r0+rows-1 are all this tile can see
            // S[rows, cols] = scale · Q_tile · Kᵀ
            Sgemm.Multiply(null, false, true, rows, cols, dq, s.Scale, w.Q.AsSpan(r0 * dq), dq, w.K, dq, 0f, w.S, cols);
            for (int r = 0; r < rows; r++)
            {
                int i = r0 + r;
                var row = w.S.AsSpan(r * cols, cols);
                var live = row[..(i + 1)];
                float max = TensorPrimitives.Max(live);
                TensorPrimitives.Subtract(live, max, live);
                TensorPrimitives.Exp(live, live);
                float sum = TensorPrimitives.Sum(live);
                row[(i + 1)..].Clear();
                w.Inv[r] = 1f / sum; // applied to the dv-wide output row instead of the (longer) probability row
                lse[(b * s.Heads + h) * t + i] = max + MathF.Log(sum);
            }
            // O_tileᵀ[dv, rows] = Vᵀ · Pᵀ: n = rows (a multiple of the micro-kernel's 64 columns) instead of dv = 32,
            // which would leave half of every micro-tile idle.
            Sgemm.Multiply(null, true, true, dv, rows, cols, 1f, w.V, dv, w.S, cols, 0f, w.DO, rows);
            for (int r = 0; r < rows; r++)
            {
                long tok = (long)b * t + r0 + r;
                var target = o.Slice((int)((tok * s.Heads + h) * dv), dv);
                float inv = w.Inv[r];
                for (int c = 0; c < dv; c++) target[c] = w.DO[c * rows + r] * inv;
            }
        }
    }

    private static void BackwardHead(in MlaAttentionShape s, int b, int h, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> lse, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpeHead, HeadScratch w)
    {
        int t = s.SeqLen, dqDim = s.QDim, dn = s.NopeDim, dr = s.RopeDim, dv = s.VDim, kvbDim = s.KvbDim;
        Gather(s, b, h, q, kvb, kpe, w);
        for (int i = 0; i < t; i++)
        {
            long tok = (long)b * t + i;
            dO.Slice((int)((tok * s.Heads + h) * dv), dv).CopyTo(w.DO.AsSpan(i * dv, dv));
        }
        // dQ, dK and dV are accumulated transposed ([dq or dv, T]): each of their GEMMs then has n = rows or cols (multiples
        // of the micro-kernel's 64 columns) instead of n = dq = 48 or dv = 32, which would leave micro-tiles part idle.
        Array.Clear(w.DK, 0, t * dqDim);
        Array.Clear(w.DV, 0, t * dv);
        for (int r0 = 0; r0 < t; r0 += TileRows)
        {
            int rows = Math.Min(TileRows, t - r0);
            int cols = r0 + rows;
            // Recompute P from the saved log-sum-exp.
            Sgemm.Multiply(null, false, true, rows, cols, dqDim, s.Scale, w.Q.AsSpan(r0 * dqDim), dqDim, w.K, dqDim, 0f, w.S, cols);
            // dP[rows, cols] = dO_tile · Vᵀ
            Sgemm.Multiply(null, false, true, rows, cols, dv, 1f, w.DO.AsSpan(r0 * dv), dv, w.V, dv, 0f, w.P2, cols);
            for (int r = 0; r < rows; r++)
            {
                int i = r0 + r;
                var p = w.S.AsSpan(r * cols, cols);
                var dp = w.P2.AsSpan(r * cols, cols);
                var live = p[..(i + 1)];
                TensorPrimitives.Subtract(live, lse[(b * s.Heads + h) * t + i], live);
                TensorPrimitives.Exp(live, live);
                p[(i + 1)..].Clear();
                dp[(i + 1)..].Clear();
                float dsum = TensorPrimitives.Dot(p, dp);
                // dS = P ⊙ (dP − Σ P·dP), scaled into score space
                TensorPrimitives.Subtract(dp, dsum, dp);
                TensorPrimitives.Multiply(dp, p, dp);
            }
            // dVᵀ[dv, cols] += dO_tileᵀ · P ; dQ_tileᵀ[dq, rows] = scale · Kᵀ · dSᵀ ; dKᵀ[dq, cols] += scale · Q_tileᵀ · dS
            Sgemm.Multiply(null, true, false, dv, cols, rows, 1f, w.DO.AsSpan(r0 * dv), dv, w.S, cols, 1f, w.DV, t);
            Sgemm.Multiply(null, true, true, dqDim, rows, cols, s.Scale, w.K, dqDim, w.P2, cols, 0f, w.DQ.AsSpan(r0), t);
            Sgemm.Multiply(null, true, false, dqDim, cols, rows, s.Scale, w.Q.AsSpan(r0 * dqDim), dqDim, w.P2, cols, 1f, w.DK, t);
        }
        for (int i = 0; i < t; i++)
        {
            long tok = (long)b * t + i;
            var dqRow = dq.Slice((int)((tok * s.Heads + h) * dqDim), dqDim);
            for (int c = 0; c < dqDim; c++) dqRow[c] += w.DQ[c * t + i];
            var dkvbRow = dkvb.Slice((int)((tok * s.Heads + h) * kvbDim), kvbDim);
            for (int c = 0; c < dn; c++) dkvbRow[c] += w.DK[c * t + i];
            for (int c = 0; c < dv; c++) dkvbRow[dn + c] += w.DV[c * t + i];
            var kp = dkpeHead.Slice(i * dr, dr);
            for (int c = 0; c < dr; c++) kp[c] += w.DK[(dn + c) * t + i];
        }
    }
}
