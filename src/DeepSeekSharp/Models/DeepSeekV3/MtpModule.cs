using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// One Multi-Token Prediction depth (model.md, MTP): h' = eh_proj([enorm(embed(t_{i+k})) ; hnorm(h^{k-1}_i)]),
/// a full decoder block, then shared_head.head(shared_head.norm(.)). The embedding and the output head are the
/// main model's (shared, as in training); checkpoints store copies under this layer's names.
/// </summary>
public sealed class MtpModule : Module
{
    public MtpModule(DeepSeekConfig c, YarnRope rope, bool materialize)
    {
        ENorm = Child("enorm", new RmsNorm(c.HiddenSize, c.RmsNormEps, materialize));
        HNorm = Child("hnorm", new RmsNorm(c.HiddenSize, c.RmsNormEps, materialize));
        EhProj = Child("eh_proj", new Linear(2 * c.HiddenSize, c.HiddenSize, materialize));
        Block = new DecoderBlock(c, rope, moe: c.HasMoe, materialize);
        foreach (var (name, child) in Block.Children) Child(name, child); // block weights sit directly under the layer
        SharedHeadNorm = Child("shared_head", new SharedHead(c, materialize)).Norm;
    }

    public RmsNorm ENorm { get; }
    public RmsNorm HNorm { get; }
    public Linear EhProj { get; }
    public DecoderBlock Block { get; }
    public RmsNorm SharedHeadNorm { get; }

    /// <summary>Returns this depth's hidden state h^k [B·T, H] (before shared_head.norm).</summary>
    /// <param name="embedded">embed(t_{i+k}) [B·T, H]</param>
    /// <param name="previous">h^{k-1} [B·T, H]</param>
    /// <param name="batch">geometry and positions</param>
    public Tensor Forward(Tensor embedded, Tensor previous, SequenceBatch batch)
    {
        Tensor merged = EhProj.Forward(Functional.ConcatLast(ENorm.Forward(embedded), HNorm.Forward(previous)));
        return Block.Forward(merged, batch);
    }

    /// <summary>Holds shared_head.norm; shared_head.head is the main lm_head.</summary>
    public sealed class SharedHead : Module
    {
        public SharedHead(DeepSeekConfig c, bool materialize) { Norm = Child("norm", new RmsNorm(c.HiddenSize, c.RmsNormEps, materialize)); }

        public RmsNorm Norm { get; }
    }
}
