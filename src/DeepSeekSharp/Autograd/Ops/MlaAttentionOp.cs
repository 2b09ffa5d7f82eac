using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// Causal MLA attention core: softmax(q·[k_nope; k_pe]ᵀ · scale) · v per head, with k_nope and v read from the
/// kv_b_proj output and k_pe shared across heads. Saves only the per-row log-sum-exp for the backward.
/// </summary>
internal sealed class MlaAttentionOp : GradNode
{
    private readonly MlaAttentionShape _shape;
    private readonly float[] _lse;

    private MlaAttentionOp(Tensor q, Tensor kvb, Tensor kpe, MlaAttentionShape shape, float[] lse) : base(q, kvb, kpe)
    {
        _shape = shape;
        _lse = lse;
    }

    /// <param name="q">[B·T, H·(dn+dr)], rope applied</param>
    /// <param name="kvb">[B·T, H·(dn+dv)]</param>
    /// <param name="kpe">[B·T, dr], rope applied</param>
    /// <param name="s">the attention geometry</param>
    /// <returns>[B·T, H·dv]</returns>
    public static Tensor Forward(Tensor q, Tensor kvb, Tensor kpe, MlaAttentionShape s)
    {
        int tokens = s.Batch * s.SeqLen;
        if (q.Length != (long)tokens * s.Heads * s.QDim || kvb.Length != (long)tokens * s.Heads * s.KvbDim || kpe.Length != (long)tokens * s.RopeDim)
            throw new ArgumentException("mla attention: input sizes do not match the shape");
        var o = Tensor.Empty(tokens, s.Heads * s.VDim);
        var lse = StoragePool.Rent(s.Batch * s.Heads * s.SeqLen);
        q.Backend.MlaAttentionForward(s, q.Span, kvb.Span, kpe.Span, o.Span, lse);
        if (!OpBase.WillRecord(q, kvb, kpe))
        {
            StoragePool.Return(lse);
            return o;
        }
        return OpBase.Record(o, () => new MlaAttentionOp(q, kvb, kpe, s, lse), q, kvb, kpe);
    }

    /// <summary>The backward recomputes probabilities from the log-sum-exp and forms Σ P·dP itself; it never reads O.</summary>
    public override bool ReadsOutput => false;

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor q = Inputs[0], kvb = Inputs[1], kpe = Inputs[2];
        // The kernel forms all three together; an input that needs no gradient gets a scratch one.
        Span<float> dq = GradOf(q), dkvb = GradOf(kvb), dkpe = GradOf(kpe);
        if (dq.IsEmpty) dq = new float[q.Length];
        if (dkvb.IsEmpty) dkvb = new float[kvb.Length];
        if (dkpe.IsEmpty) dkpe = new float[kpe.Length];
        q.Backend.MlaAttentionBackward(_shape, q.Span, kvb.Span, kpe.Span, _lse, dy.AsSpan(0, (int)output.Length), dq, dkvb, dkpe);
        StoragePool.Return(_lse); // a node's backward runs once
    }
}
