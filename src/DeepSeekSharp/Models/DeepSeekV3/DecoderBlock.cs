using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Pre-norm block: a = h + MLA(norm(h)); h' = a + FFN(norm(a)), FFN dense or MoE.</summary>
public sealed class DecoderBlock : Layer<SequenceBatch>
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

    /// <summary>The feed-forward half: the MoE, or a dense SwiGLU MLP.</summary>
    public Layer FeedForward => (Layer?)Moe ?? DenseMlp!;

    /// <param name="h">[B·T, H]</param>
    /// <param name="batch">geometry and positions</param>
    /// <returns>[B·T, H]</returns>
    protected override Tensor Compute(Tensor h, SequenceBatch batch)
    {
        Tensor a = Functional.Add(h, SelfAttn.Forward(InputLayerNorm.Forward(h), batch));
        return Functional.Add(a, FeedForward.Forward(PostAttentionLayerNorm.Forward(a)));
    }
}
