using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Pre-norm block: a = h + MLA(norm(h)); h' = a + FFN(norm(a)), FFN dense or MoE.</summary>
public sealed class DecoderBlock : Module
{
    public DecoderBlock(DeepSeekConfig c, YarnRope rope, bool moe, bool materialize)
    {
        SelfAttn = Child("self_attn", new Mla(c, rope, materialize));
        if (moe) Moe = Child("mlp", new Moe(c, materialize));
        else DenseMlp = Child("mlp", new Mlp(c.HiddenSize, c.IntermediateSize, materialize));
        InputLayerNorm = Child("input_layernorm", new RmsNorm(c.HiddenSize, c.RmsNormEps, materialize));
        PostAttentionLayerNorm = Child("post_attention_layernorm", new RmsNorm(c.HiddenSize, c.RmsNormEps, materialize));
    }

    public Mla SelfAttn { get; }
    public Moe? Moe { get; }
    public Mlp? DenseMlp { get; }
    public RmsNorm InputLayerNorm { get; }
    public RmsNorm PostAttentionLayerNorm { get; }

    /// <param name="h">[B·T, H]</param>
    /// <param name="batch">geometry and positions</param>
    public Tensor Forward(Tensor h, SequenceBatch batch)
    {
        // Normed inputs whose only readers keep FP8 copies (precision: fp8) are dropped once consumed; with
        // recompute_norms the others are too, and recomputed from h / a when the backward reads them.
        // Branch outputs are only summed into the residual stream, whose Add reads no values, so they go too.
        Tensor normed = InputLayerNorm.Forward(h);
        Tensor attn = SelfAttn.Forward(normed, batch);
        InputLayerNorm.ReleaseOutput(normed);
        Tensor a = Functional.Add(h, attn);
        attn.ReleaseIfUnread();
        Tensor f = PostAttentionLayerNorm.Forward(a);
        Tensor mlp = Moe is not null ? Moe.Forward(f) : DenseMlp!.Forward(f);
        PostAttentionLayerNorm.ReleaseOutput(f);
        Tensor output = Functional.Add(a, mlp);
        mlp.ReleaseIfUnread();
        a.ReleaseIfUnread(); // read by the FFN norm's backward when training; otherwise dead here
        return output;
    }
}
