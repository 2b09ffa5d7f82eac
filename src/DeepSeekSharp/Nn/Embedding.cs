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

    /// <returns>[ids.Length, hidden]</returns>
    public Tensor Forward(int[] ids) => Functional.Embedding(Weight, ids);
}
