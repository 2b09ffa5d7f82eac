namespace DeepSeekSharp.Kernels;

/// <summary>
/// Varlen attention for a backend whose kernel only knows whole sequences: each document of
/// <see cref="MlaAttentionShape.Documents"/> is one batch-1 call on its rows (a document's rows are contiguous in every
/// [B·T, …] layout), and only the log-sum-exp, laid out [B, H, T], is gathered and scattered per document.
/// </summary>
public static class DocumentAttention
{
    public static void Forward(IBackend backend, in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> logSumExp)
    {
        for (int d = 0; d < s.DocumentCount; d++)
        {
            var (start, length) = s.Document(d);
            var one = OneDocument(s, length);
            var lse = new float[s.Heads * length];
            backend.MlaAttentionForward(one, q.Slice(start * s.Heads * s.QDim, length * s.Heads * s.QDim),
                kvb.Slice(start * s.Heads * s.KvbDim, length * s.Heads * s.KvbDim), kpe.Slice(start * s.RopeDim, length * s.RopeDim),
                o.Slice(start * s.Heads * s.VDim, length * s.Heads * s.VDim), lse);
            for (int h = 0; h < s.Heads; h++) lse.AsSpan(h * length, length).CopyTo(logSumExp.Slice(LseOffset(s, start, h), length));
        }
    }

    public static void Backward(IBackend backend, in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpe)
    {
        for (int d = 0; d < s.DocumentCount; d++)
        {
            var (start, length) = s.Document(d);
            var one = OneDocument(s, length);
            var lse = new float[s.Heads * length];
            for (int h = 0; h < s.Heads; h++) logSumExp.Slice(LseOffset(s, start, h), length).CopyTo(lse.AsSpan(h * length, length));
            int qRows = start * s.Heads * s.QDim, qLen = length * s.Heads * s.QDim;
            int kvRows = start * s.Heads * s.KvbDim, kvLen = length * s.Heads * s.KvbDim;
            int oRows = start * s.Heads * s.VDim, oLen = length * s.Heads * s.VDim;
            backend.MlaAttentionBackward(one, q.Slice(qRows, qLen), kvb.Slice(kvRows, kvLen), kpe.Slice(start * s.RopeDim, length * s.RopeDim), lse,
                dO.Slice(oRows, oLen), dq.Slice(qRows, qLen), dkvb.Slice(kvRows, kvLen), dkpe.Slice(start * s.RopeDim, length * s.RopeDim));
        }
    }

    private static MlaAttentionShape OneDocument(in MlaAttentionShape s, int length) => s with { Batch = 1, SeqLen = length, Documents = null };

    /// <summary>Where row <paramref name="start"/>'s log-sum-exp for head <paramref name="h"/> lies in [B, H, T].</summary>
    private static int LseOffset(in MlaAttentionShape s, int start, int h)
    {
        int b = start / s.SeqLen;
        return (b * s.Heads + h) * s.SeqLen + start - b * s.SeqLen;
    }
}
