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
public sealed class Mla : Layer<SequenceBatch>
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
    /// Recompute the up-projections q = rope(q_b(c_q)) (or q_proj) and kv_b(c_kv) in the backward instead of keeping them
    /// for the attention core (DeepSeek-V3's recomputation; config key <c>recompute_mla_up</c>): a policy on the two
    /// projections (<see cref="Layer.RecomputeOutput"/>), which RoPE inherits.
    /// </summary>
    public bool RecomputeUpProjections
    {
        get => KvBProj.RecomputeOutput;
        set => (QBProj ?? QProj)!.RecomputeOutput = KvBProj.RecomputeOutput = value;
    }

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
    protected override Tensor Compute(Tensor x, SequenceBatch batch)
    {
        var c = _c;
        int n = c.NumAttentionHeads, dn = c.QkNopeHeadDim, dr = c.QkRopeHeadDim, dc = c.KvLoraRank;
        var (cos, sin) = _rope.Tables(MaxPosition(batch) + 1);

        Tensor q = QProj is not null                                                      // [B·T, n·(dn+dr)]
            ? QProj.Forward(x)
            : QBProj!.Forward(QALayerNorm!.Forward(QAProj!.Forward(x)));                   // q_b(norm(q_a(x)))
        q = Functional.Rope(q, n, dn + dr, dn, dr, batch.Positions, cos, sin);            // rope on the last dr of each head
        Tensor kvA = KvAProjWithMqa.Forward(x);                                           // [B·T, dc+dr]
        Tensor cKv = KvALayerNorm.Forward(Functional.SliceLast(kvA, 0, dc));              // c_kv [B·T, dc]
        Tensor kPe = Functional.Rope(Functional.SliceLast(kvA, dc, dr), 1, dr, 0, dr, batch.Positions, cos, sin); // [B·T, dr]
        Tensor kv = KvBProj.Forward(cKv);                                                 // [k_nope ; v] [B·T, n·(dn+dv)]
        var shape = new MlaAttentionShape(batch.Batch, batch.SeqLen, n, dn, dr, c.VHeadDim, _rope.SoftmaxScale,
            batch.OneDocumentPerSequence ? null : batch.DocumentOffsets);                  // isolated documents (packing)
        Tensor o = Functional.MlaAttention(q, kv, kPe, shape);                            // [B·T, n·dv]
        return OProj.Forward(o);
    }

    private static int MaxPosition(SequenceBatch batch)
    {
        int max = 0;
        foreach (int p in batch.Positions) if (p > max) max = p;
        return max;
    }
}
