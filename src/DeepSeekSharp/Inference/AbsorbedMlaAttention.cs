using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Inference;

/// <summary>
/// MLA in its absorbed (inference) form (model.md): W_UK is folded into the query and W_UV applied after the
/// weighted sum, so attention reads only the cached latents: score_t = (q_nope·W_UK)·c_kv,t + q_pe·k_pe,t and
/// o_h = W_UV·Σ_t p_t c_kv,t. Equal to the training form (tested), with a cache of dc + dr floats per token.
/// </summary>
public static class AbsorbedMlaAttention
{
    /// <summary>
    /// Runs the attention of one layer for new rows of several sequences. Row r belongs to sequence
    /// <paramref name="rowSequence"/>[r] at position <paramref name="rowPosition"/>[r]; each sequence's new rows are
    /// contiguous and their c_kv/k_pe are appended to that sequence's cache first (at their positions).
    /// </summary>
    /// <param name="x">[rows, H] the normalised input of the layer</param>
    /// <param name="kvBWeight">[n·(dn+dv), dc] the weight kv_b_proj computes with (its own, or with an adapter folded in);
    /// null = <c>mla.KvBProj.Weight</c></param>
    /// <returns>[rows, H]</returns>
    public static Tensor Forward(Mla mla, DeepSeekConfig c, YarnRope rope, Tensor x, int layer,
        IReadOnlyList<LatentKvCache> caches, int[] rowSequence, int[] rowPosition, float[]? kvBWeight = null)
    {
        // The heads' small products run on the model's backend, one (sequence, head) piece per worker.
        var backend = mla.KvBProj.Weight.Backend;
        int n = c.NumAttentionHeads, dn = c.QkNopeHeadDim, dr = c.QkRopeHeadDim, dv = c.VHeadDim, dc = c.KvLoraRank;
        int rows = x.Shape[0];
        int maxPos = rowPosition.Max();
        var (cos, sin) = rope.Tables(maxPos + 1);
        Tensor q = mla.QProj is not null ? mla.QProj.Forward(x) : mla.QBProj!.Forward(mla.QALayerNorm!.Forward(mla.QAProj!.Forward(x)));
        q = Functional.Rope(q, n, dn + dr, dn, dr, rowPosition, cos, sin);                 // [rows, n·(dn+dr)]
        Tensor kvA = mla.KvAProjWithMqa.Forward(x);                                         // [rows, dc+dr]
        Tensor cKv = mla.KvALayerNorm.Forward(Functional.SliceLast(kvA, 0, dc));             // [rows, dc]
        Tensor kPe = Functional.Rope(Functional.SliceLast(kvA, dc, dr), 1, dr, 0, dr, rowPosition, cos, sin);
        for (int r = 0; r < rows; r++)
        {
            var cache = caches[rowSequence[r]];
            cKv.Span.Slice(r * dc, dc).CopyTo(cache.LatentRows(layer).AsSpan(rowPosition[r] * dc, dc));
            kPe.Span.Slice(r * dr, dr).CopyTo(cache.RopeKeyRows(layer).AsSpan(rowPosition[r] * dr, dr));
        }

        var o = new float[rows * n * dv];
        float[] wkvb = kvBWeight ?? mla.KvBProj.Weight.Data;                                 // [n·(dn+dv), dc]
        float scale = rope.SoftmaxScale;
        // Sequences' row ranges.
        var ranges = new List<(int Seq, int Start, int Count)>();
        for (int r = 0; r < rows;)
        {
            int s = rowSequence[r], start = r;
            while (r < rows && rowSequence[r] == s) r++;
            ranges.Add((s, start, r - start));
        }
        float[] qData = q.Data;
        var work = new List<(int Range, int Head)>();
        for (int i = 0; i < ranges.Count; i++) for (int h = 0; h < n; h++) work.Add((i, h));
        void RunHead(int w)
        {
            var (ri, h) = work[w];
            var (seq, start, count) = ranges[ri];
            var cache = caches[seq];
            int keys = rowPosition[start + count - 1] + 1;
            var qAbs = new float[count * dc];
            var scores = new float[count * keys];
            var ctx = new float[count * dc];
            var qRows = new float[count * (dn + dr)];
            for (int j = 0; j < count; j++)
                qData.AsSpan(((start + j) * n + h) * (dn + dr), dn + dr).CopyTo(qRows.AsSpan(j * (dn + dr)));
            var wuk = wkvb.AsSpan(h * (dn + dv) * dc, dn * dc);          // [dn, dc]
            var wuv = wkvb.AsSpan((h * (dn + dv) + dn) * dc, dv * dc);   // [dv, dc]
            // q_abs[count, dc] = q_nope[count, dn] · W_UK[dn, dc]
            backend.Gemm(false, false, count, dc, dn, 1f, qRows, dn + dr, wuk, dc, 0f, qAbs, dc);
            // scores = q_abs · C_kvᵀ + q_pe · K_peᵀ   (over the cached keys 0..keys-1)
            backend.Gemm(false, true, count, keys, dc, scale, qAbs, dc, cache.LatentRows(layer), dc, 0f, scores, keys);
            backend.Gemm(false, true, count, keys, dr, scale, qRows.AsSpan(dn), dn + dr, cache.RopeKeyRows(layer), dr, 1f, scores, keys);
            for (int j = 0; j < count; j++)
            {
                int visible = rowPosition[start + j] + 1;
                var row = scores.AsSpan(j * keys, keys);
                TensorPrimitives.SoftMax(row[..visible], row[..visible]);
                row[visible..].Clear();
            }
            // ctx[count, dc] = P · C_kv ;  o_h[count, dv] = ctx · W_UVᵀ
            backend.Gemm(false, false, count, dc, keys, 1f, scores, keys, cache.LatentRows(layer), dc, 0f, ctx, dc);
            var oh = new float[count * dv];
            backend.Gemm(false, true, count, dv, dc, 1f, ctx, dc, wuv, dc, 0f, oh, dv);
            for (int j = 0; j < count; j++) oh.AsSpan(j * dv, dv).CopyTo(o.AsSpan(((start + j) * n + h) * dv, dv));
        }
        backend.RunConcurrently(work.Count, RunHead);
        return mla.OProj.Forward(Tensor.FromArray(o, rows, n * dv));
    }
}
