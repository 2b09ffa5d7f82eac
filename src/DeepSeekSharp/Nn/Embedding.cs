using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Nn;

/// <summary>Token embedding table [vocab, hidden].</summary>
public sealed class Embedding : Module
{
    public Embedding(int vocab, int dim, bool materialize)
    {
        Weight = Param("weight", new Parameter([vocab, dim], materialize) { WeightDecay = false });
    }

    /// <summary>[vocab, hidden]</summary>
    public Parameter Weight { get; }

    /// <summary>
    /// The frozen table kept as stored (BF16 bits, as DeepSeek's checkpoints hold it) instead of an fp32 copy; when
    /// set, <see cref="Weight"/> is released and lookups widen the rows they read. Nothing flows back into it.
    /// </summary>
    public CompressedWeight? InferenceWeight { get; set; }

    /// <returns>[ids.Length, hidden]</returns>
    public Tensor Forward(int[] ids) =>
        InferenceWeight is { } stored ? Functional.EmbeddingFrozen(stored, ids) : Functional.Embedding(Weight, ids);
}
