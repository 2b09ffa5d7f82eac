using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Inference;

/// <summary>
/// MLA in its absorbed (inference) form (model.md): W_UK is folded into the query and W_UV applied after the
/// weighted sum, so attention reads only the cached latents: score_t = (q_nope·W_UK)·c_kv,t + q_pe·k_pe,t and
/// o_h = W_UV·Σ_t p_t c_kv,t. Equal to the training form (tested), with a cache of dc + dr floats per token.
/// </summary>
/// <remarks>
/// The work splits in three so that a decode step over many sequences (GRPO's rollouts) is a few large products rather
/// than many tiny ones: the absorption q_nope·W_UK and the output ctx·W_UVᵀ are one product per head over every row of
/// the call (each head's weight read once per step, whatever the number of sequences), and only the part that reads a
/// cache runs per row: all heads of a row against that row's visible keys at once (MLA's heads share the latent keys),
/// rows spread over the workers. A row's result therefore does not depend on which other rows share the call, except
/// through the row count's choice of product kernel (≤ 4 rows stream the weight).
/// </remarks>
public static class AbsorbedMlaAttention
{
    /// <summary>
    /// Multiply-adds from which a row's scores and context go through the GEMM (DeepSeek-V3: 128 heads × 512 latent
    /// dimensions, always) instead of inlined vector loops (a small model's 8 heads × 64: the GEMM's packing and
    /// 6-row tiles cost more than the products).
    /// </summary>
    private const long RowGemmFrom = 256 * 1024;

    /// <summary>
    /// Runs the attention of one layer for new rows of several sequences. Row r belongs to sequence
    /// <paramref name="rowSequence"/>[r] at position <paramref name="rowPosition"/>[r]; its c_kv/k_pe are written into
    /// that sequence's cache at that position first, and it attends to the cache's positions 0..rowPosition[r].
    /// </summary>
    /// <param name="x">[rows, H] the normalised input of the layer</param>
    /// <param name="kvBWeight">[n·(dn+dv), dc] the weight kv_b_proj computes with (its own, or with an adapter folded in);
    /// null = <c>mla.KvBProj.Weight</c></param>
    /// <param name="project">how a projection is applied to rows (the decoder's packed weights); null = the Linear's own forward</param>
    /// <returns>[rows, H]</returns>
    public static Tensor Forward(Mla mla, DeepSeekConfig c, YarnRope rope, Tensor x, int layer,
        IReadOnlyList<LatentKvCache> caches, int[] rowSequence, int[] rowPosition, float[]? kvBWeight = null, Func<Linear, Tensor, Tensor>? project = null)
    {
        project ??= static (linear, rows) => linear.Forward(rows);
        var backend = mla.KvBProj.Weight.Backend;
        int n = c.NumAttentionHeads, dn = c.QkNopeHeadDim, dr = c.QkRopeHeadDim, dv = c.VHeadDim, dc = c.KvLoraRank, qd = dn + dr;
        int rows = x.Shape[0];
        int maxPos = rowPosition.Max();
        var (cos, sin) = rope.Tables(maxPos + 1);
        Tensor q = mla.QProj is not null ? project(mla.QProj, x) : project(mla.QBProj!, mla.QALayerNorm!.Forward(project(mla.QAProj!, x)));
        q = Functional.Rope(q, n, qd, dn, dr, rowPosition, cos, sin);                       // [rows, n·(dn+dr)]
        Tensor kvA = project(mla.KvAProjWithMqa, x);                                         // [rows, dc+dr]
        Tensor cKv = mla.KvALayerNorm.Forward(Functional.SliceLast(kvA, 0, dc));             // [rows, dc]
        Tensor kPe = Functional.Rope(Functional.SliceLast(kvA, dc, dr), 1, dr, 0, dr, rowPosition, cos, sin);
        for (int r = 0; r < rows; r++)
        {
            var cache = caches[rowSequence[r]];
            cKv.Span.Slice(r * dc, dc).CopyTo(cache.LatentRows(layer).AsSpan(rowPosition[r] * dc, dc));
            kPe.Span.Slice(r * dr, dr).CopyTo(cache.RopeKeyRows(layer).AsSpan(rowPosition[r] * dr, dr));
        }

        float[] wkvb = kvBWeight ?? mla.KvBProj.Weight.Data;                                 // [n·(dn+dv), dc]
        float scale = rope.SoftmaxScale;
        Tensor qAbs = Tensor.Empty(rows, n * dc);                                            // [rows, n, dc]
        Tensor ctx = Tensor.Empty(rows, n * dc);                                             // [rows, n, dc]
        Tensor o = Tensor.Empty(rows, n * dv);                                               // [rows, n, dv]
        float[] qData = q.Data, qa = qAbs.Data, cx = ctx.Data, od = o.Data;

        // q_abs[:, h] = q_nope[:, h] · W_UK,h  (W_UK,h = rows [h·(dn+dv), h·(dn+dv)+dn) of kv_b_proj: [dn, dc])
        backend.RunConcurrently(n, h =>
        {
            var wuk = wkvb.AsSpan(h * (dn + dv) * dc, dn * dc);
            if (rows <= 4)
                for (int r = 0; r < rows; r++) RowTimesMatrix(qData.AsSpan((r * n + h) * qd, dn), wuk, dc, qa.AsSpan((r * n + h) * dc, dc));
            else backend.Gemm(false, false, rows, dc, dn, 1f, qData.AsSpan(h * qd), n * qd, wuk, dc, 0f, qa.AsSpan(h * dc), n * dc);
        });

        // Per row: scores [n, keys] = scale·(q_abs · C_kvᵀ + q_pe · K_peᵀ), softmax per head, ctx [n, dc] = P · C_kv.
        backend.RunConcurrently(rows, r =>
        {
            var cache = caches[rowSequence[r]];
            int keys = rowPosition[r] + 1;
            float[] latent = cache.LatentRows(layer), ropeKeys = cache.RopeKeyRows(layer);
            float[] scores = ArrayPool<float>.Shared.Rent(n * keys);
            try
            {
                var qaRow = qa.AsSpan(r * n * dc, n * dc);
                var cxRow = cx.AsSpan(r * n * dc, n * dc);
                if ((long)n * keys * dc >= RowGemmFrom)
                {
                    backend.Gemm(false, true, n, keys, dc, scale, qaRow, dc, latent, dc, 0f, scores, keys);
                    backend.Gemm(false, true, n, keys, dr, scale, qData.AsSpan(r * n * qd + dn), qd, ropeKeys, dr, 1f, scores, keys);
                    for (int h = 0; h < n; h++) TensorPrimitives.SoftMax(scores.AsSpan(h * keys, keys), scores.AsSpan(h * keys, keys));
                    backend.Gemm(false, false, n, dc, keys, 1f, scores, keys, latent, dc, 0f, cxRow, dc);
                    return;
                }
                // Small rows (decoding a small model): inlined vector loops, key-major so each cached key is read once.
                var qpeRow = qData.AsSpan(r * n * qd, n * qd);
                for (int t = 0; t < keys; t++)
                {
                    var kc = latent.AsSpan(t * dc, dc);
                    var kr = ropeKeys.AsSpan(t * dr, dr);
                    for (int h = 0; h < n; h++)
                        scores[h * keys + t] = scale * (Dot(qaRow.Slice(h * dc, dc), kc) + Dot(qpeRow.Slice(h * qd + dn, dr), kr));
                }
                for (int h = 0; h < n; h++) TensorPrimitives.SoftMax(scores.AsSpan(h * keys, keys), scores.AsSpan(h * keys, keys));
                cxRow.Clear();
                for (int t = 0; t < keys; t++)
                {
                    var kc = latent.AsSpan(t * dc, dc);
                    for (int h = 0; h < n; h++) Axpy(scores[h * keys + t], kc, cxRow.Slice(h * dc, dc));
                }
            }
            finally { ArrayPool<float>.Shared.Return(scores); }
        });

        // o[:, h] = ctx[:, h] · W_UV,hᵀ  (W_UV,h = the next dv rows of kv_b_proj: [dv, dc])
        backend.RunConcurrently(n, h =>
            backend.Gemm(false, true, rows, dv, dc, 1f, cx.AsSpan(h * dc), n * dc, wkvb.AsSpan((h * (dn + dv) + dn) * dc, dv * dc), dc, 0f,
                od.AsSpan(h * dv), n * dv));
        return project(mla.OProj, o);
    }

    /// <summary>Σ a·b over a short vector (a latent or rope key): one inlined loop, no per-call dispatch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int n = a.Length, i = 0;
        if (b.Length < n) throw new ArgumentException("vector lengths differ");
        ref float pa = ref MemoryMarshal.GetReference(a), pb = ref MemoryMarshal.GetReference(b);
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
                acc = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, (nuint)i), Vector512.LoadUnsafe(ref pb, (nuint)i), acc);
            sum = Vector512.Sum(acc);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
                acc = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref pa, (nuint)i), Vector256.LoadUnsafe(ref pb, (nuint)i), acc);
            sum = Vector256.Sum(acc);
        }
        for (; i < n; i++) sum += Unsafe.Add(ref pa, i) * Unsafe.Add(ref pb, i);
        return sum;
    }

    /// <summary>y += alpha · x over a short vector: one inlined loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy(float alpha, ReadOnlySpan<float> x, Span<float> y)
    {
        int n = y.Length, i = 0;
        if (x.Length < n) throw new ArgumentException("vector lengths differ");
        ref float px = ref MemoryMarshal.GetReference(x), py = ref MemoryMarshal.GetReference(y);
        if (Vector512.IsHardwareAccelerated)
        {
            var a = Vector512.Create(alpha);
            for (; i <= n - 16; i += 16)
                Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref px, (nuint)i), a, Vector512.LoadUnsafe(ref py, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var a = Vector256.Create(alpha);
            for (; i <= n - 8; i += 8)
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref px, (nuint)i), a, Vector256.LoadUnsafe(ref py, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref py, i) += alpha * Unsafe.Add(ref px, i);
    }

    /// <summary>y[m] = x[k] · W[k, m] (W row-major) as k vector multiply-adds: a weight-streaming row product.</summary>
    private static void RowTimesMatrix(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int m, Span<float> y)
    {
        y.Clear();
        for (int p = 0; p < x.Length; p++) Axpy(x[p], w.Slice(p * m, m), y);
    }
}
