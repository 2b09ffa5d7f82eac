using DeepSeekSharp.Autograd;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// Multi-head Latent Attention, training form (model.md, MLA): queries through the q LoRA (or q_proj), keys and
/// values from the compressed latent c_kv = kv_a_layernorm(kv_a[:dc]) via kv_b_proj, plus one roped key k_pe
/// shared by all heads.
/// </summary>
public sealed class Mla : Module
{
    private readonly DeepSeekConfig _c;
    private readonly YarnRope _rope;

    public Mla(DeepSeekConfig c, YarnRope rope, bool materialize)
    {
        _c = c;
        _rope = rope;
        int n = c.NumAttentionHeads, h = c.HiddenSize;
        if (c.HasQLora)
        {
            QAProj = Child("q_a_proj", new Linear(h, c.QLoraRank!.Value, materialize));
            QALayerNorm = Child("q_a_layernorm", new RmsNorm(c.QLoraRank!.Value, c.RmsNormEps, materialize));
            QBProj = Child("q_b_proj", new Linear(c.QLoraRank!.Value, n * c.QkHeadDim, materialize));
        }
        else
        {
            QProj = Child("q_proj", new Linear(h, n * c.QkHeadDim, materialize));
        }
        KvAProjWithMqa = Child("kv_a_proj_with_mqa", new Linear(h, c.KvLoraRank + c.QkRopeHeadDim, materialize));
        KvALayerNorm = Child("kv_a_layernorm", new RmsNorm(c.KvLoraRank, c.RmsNormEps, materialize));
        KvBProj = Child("kv_b_proj", new Linear(c.KvLoraRank, n * (c.QkNopeHeadDim + c.VHeadDim), materialize));
        OProj = Child("o_proj", new Linear(n * c.VHeadDim, h, materialize));
    }

    /// <summary>
    /// Recompute the up-projections q = rope(q_b(c_q)) and kv_b(c_kv) in the backward instead of keeping them for the
    /// attention core (DeepSeek-V3's recomputation; config key <c>recompute_mla_up</c>). fp32, BF16 and FP8 projections
    /// are recomputed exactly (<see cref="Tensor.DropForRecompute"/>); an adapted (LoRA) one keeps its output.
    /// </summary>
    public bool RecomputeUpProjections { get; set; }

    public Linear? QProj { get; }
    public Linear? QAProj { get; }
    public RmsNorm? QALayerNorm { get; }
    public Linear? QBProj { get; }
    public Linear KvAProjWithMqa { get; }
    public RmsNorm KvALayerNorm { get; }
    public Linear KvBProj { get; }
    public Linear OProj { get; }

    /// <param name="x">[B·T, H]</param>
    /// <param name="batch">geometry and positions</param>
    /// <returns>[B·T, H]</returns>
    public Tensor Forward(Tensor x, SequenceBatch batch)
    {
        var c = _c;
        int n = c.NumAttentionHeads, dn = c.QkNopeHeadDim, dr = c.QkRopeHeadDim, dc = c.KvLoraRank;
        var (cos, sin) = _rope.Tables(MaxPosition(batch) + 1);

        Tensor q;                                                                        // [B·T, n·(dn+dr)]
        if (QProj is not null) q = QProj.Forward(x);
        else
        {
            Tensor qARaw = QAProj!.Forward(x);
            Tensor qA = QALayerNorm!.Forward(qARaw);
            qARaw.ReleaseIfUnread(); // kept when training: the norm's backward reads its input
            q = QBProj!.Forward(qA);
            QALayerNorm.ReleaseOutput(qA);
        }
        Tensor qUnroped = q;
        q = Functional.Rope(q, n, dn + dr, dn, dr, batch.Positions, cos, sin);
        // RoPE's backward is a rotation of the gradient, it keeps no input; a recomputed q needs it rebuilt, though.
        if (!(RecomputeUpProjections && qUnroped.DropForRecompute())) qUnroped.ReleaseIfUnread();
        Tensor kvA = KvAProjWithMqa.Forward(x);                                          // [B·T, dc+dr]
        Tensor cKvRaw = Functional.SliceLast(kvA, 0, dc), kPeRaw = Functional.SliceLast(kvA, dc, dr);
        Tensor cKv = KvALayerNorm.Forward(cKvRaw);                                       // [B·T, dc]
        Tensor kPe = Functional.Rope(kPeRaw, 1, dr, 0, dr, batch.Positions, cos, sin);   // [B·T, dr]
        cKvRaw.ReleaseIfUnread();
        kPeRaw.ReleaseIfUnread();
        Tensor kvb = KvBProj.Forward(cKv);                                               // [B·T, n·(dn+dv)]
        KvALayerNorm.ReleaseOutput(cKv);
        kvA.ReleaseIfUnread(); // both slices are copies
        var shape = new MlaAttentionShape(batch.Batch, batch.SeqLen, n, dn, dr, c.VHeadDim, _rope.SoftmaxScale);
        Tensor o = Functional.MlaAttention(q, kvb, kPe, shape);                          // [B·T, n·dv]
        if (RecomputeUpProjections)
        {
            // The attention backward is the only reader of q and kv_b: their producing ops rebuild them then.
            kvb.DropForRecompute();
            q.DropForRecompute();
        }
        else
        {
            // Without a recorded backward (inference, no-grad) the attention core's inputs are dead now.
            q.ReleaseIfUnread();
            kvb.ReleaseIfUnread();
            kPe.ReleaseIfUnread();
        }
        Tensor output = OProj.Forward(o);
        o.ReleaseIfUnread(); // kept only when o_proj's backward reads it (fp32); an FP8 o_proj has its own copy
        return output;
    }

    private static int MaxPosition(SequenceBatch batch)
    {
        int max = 0;
        foreach (int p in batch.Positions) if (p > max) max = p;
        return max;
    }
}
