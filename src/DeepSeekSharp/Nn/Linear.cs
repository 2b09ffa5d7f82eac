using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Nn;

/// <summary>
/// A bias-free linear layer y = x·Wᵀ with W [out, in] (HF layout). Every projection of the model is one of
/// these, so precision (FP8) and adapters (LoRA) are decided in one place: <see cref="Adapter"/> lets a wrapper
/// add to or replace the output without the owning module knowing.
/// </summary>
public sealed class Linear : Layer
{
    public Linear(int inFeatures, int outFeatures, bool materialize)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        Weight = Param("weight", new Parameter([outFeatures, inFeatures], materialize));
    }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    /// <summary>[out, in]</summary>
    public Parameter Weight { get; }

    /// <summary>Compute with a BF16 copy of the (fp32 master) weight.</summary>
    public bool Bf16Compute { get; set; }

    /// <summary>Run the forward, input-gradient and weight-gradient GEMMs with FP8 inputs (DeepSeek-V3's recipe).</summary>
    public bool Fp8Compute { get; set; }

    /// <summary>With <see cref="Fp8Compute"/>: cache the input for the backward in E5M6 with power-of-two 1×128 scales
    /// instead of E4M3 (DeepSeek-V3 does this for the Linear after attention, o_proj).</summary>
    public bool Fp8E5M6InputCache { get; set; }

    /// <summary>An inference-only compressed copy of the weight (BF16 or FP8 blocks); when set, the forward reads it.</summary>
    public CompressedWeight? InferenceWeight { get; set; }

    /// <summary>Optional hook (LoRA, quantised compute); null means the plain fp32 product.</summary>
    public ILinearAdapter? Adapter { get; set; }

    /// <summary>
    /// Attaches <paramref name="adapter"/> and registers its parameters under this layer's name (LoRA's
    /// <c>lora_A.weight</c> → <c>model.layers.0.self_attn.o_proj.lora_A.weight</c>), so the optimizer, the freezing and
    /// the checkpoints see them as they see the weight. One adapter per layer.
    /// </summary>
    public void AttachAdapter(ILinearAdapter adapter, IEnumerable<(string Name, Parameter Parameter)> parameters)
    {
        if (Adapter is not null) throw new InvalidOperationException("this Linear already has an adapter");
        Adapter = adapter;
        foreach (var (name, p) in parameters) Param(name, p);
    }

    /// <summary>
    /// The weight this layer computes with, [out, in] in a new array: W (widened when stored compressed) with the
    /// adapter folded in. For code that reads the weight instead of calling the layer (absorbed MLA decoding).
    /// </summary>
    public float[] EffectiveWeight()
    {
        var w = InferenceWeight?.Decompress() ?? Weight.Span.ToArray();
        Adapter?.FoldInto(w);
        return w;
    }

    /// <summary>
    /// This layer as one routed expert's projection for the grouped expert GEMMs (fp32 or stored weight, optional
    /// low-rank adapter), or null when it computes another way (FP8 or BF16 compute, an adapter that is not low-rank,
    /// no weight at all).
    /// </summary>
    public ExpertLinear? AsExpertLinear()
    {
        if (Fp8Compute || Bf16Compute || (InferenceWeight is null && Weight.IsMeta)) return null;
        LowRankAdapter? lowRank = null;
        if (Adapter is not null && (lowRank = Adapter.AsLowRank()) is null) return null;
        return new ExpertLinear(Weight, InferenceWeight, lowRank);
    }

    /// <param name="x">[.., in]</param>
    /// <returns>[.., out]</returns>
    protected override Tensor Compute(Tensor x)
    {
        var y = InferenceWeight is not null ? Functional.LinearCompressed(x, InferenceWeight)
            : Fp8Compute ? Functional.LinearFp8(x, Weight, Fp8E5M6InputCache)
            : Bf16Compute ? Functional.Linear(x, Functional.RoundBf16(Weight)) : Functional.Linear(x, Weight);
        return Adapter is null ? y : Adapter.Forward(this, x, y);
    }
}

/// <summary>Extends a <see cref="Linear"/> (LoRA adds B·A·x; other adapters may change the compute).</summary>
public interface ILinearAdapter
{
    /// <summary>Given the layer, its input and its base output, returns the final output.</summary>
    Tensor Forward(Linear layer, Tensor input, Tensor baseOutput);

    /// <summary>Adds the adapter's contribution to the layer's weight [out, in] (LoRA: scale·B·A), so that x·W'ᵀ equals <see cref="Forward"/>.</summary>
    void FoldInto(Span<float> weight);

    /// <summary>The adapter as y += scale·B·A·drop(x) for the current step (LoRA), or null when it is not of that form.</summary>
    LowRankAdapter? AsLowRank() => null;
}
