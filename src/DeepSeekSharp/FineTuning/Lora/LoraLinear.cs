using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>
/// LoRA on one <see cref="Linear"/> (training.md, LoRA): y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ with A [r, in], B [out, r] and
/// scale = α/r (α/√r with rsLoRA). W is left as it is (frozen by <see cref="LoraAdapters.Apply"/>); A and B are the
/// trained parameters, registered on the Linear as <c>lora_A.weight</c> and <c>lora_B.weight</c> (PEFT's names).
/// With <see cref="Dropout"/> the adapter's input is drop(x) during training (lora_dropout).
/// </summary>
public sealed class LoraLinear : ILinearAdapter
{
    public LoraLinear(int inFeatures, int outFeatures, int rank, float alpha, bool useRslora)
    {
        if (rank <= 0) throw new DeepSeekSharpException($"lora_r must be positive (got {rank})");
        Rank = rank;
        Alpha = alpha;
        Scale = useRslora ? alpha / MathF.Sqrt(rank) : alpha / rank;
        A = new Parameter([rank, inFeatures], materialize: true) { WeightDecay = true };
        B = new Parameter([outFeatures, rank], materialize: true) { WeightDecay = true };
    }

    public int Rank { get; }

    /// <summary>The model's shared lora_dropout and this Linear's path (the mask's identity); null: no dropout.</summary>
    public (LoraDropout Dropout, string Path)? Dropout { get; set; }

    public float Alpha { get; }

    public float Scale { get; }

    /// <summary>[r, in]</summary>
    public Parameter A { get; }

    /// <summary>[out, r]; zero at initialisation, so the adapted model starts equal to the base.</summary>
    public Parameter B { get; }

    /// <summary>PEFT's initialisation: A Kaiming-uniform with a = √5 (bound 1/√in, torch's default for nn.Linear), B zero.</summary>
    public void Initialize(Random rng)
    {
        float bound = 1f / MathF.Sqrt(A.Shape[1]);
        var a = A.Span;
        for (int i = 0; i < a.Length; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
        B.Span.Clear();
    }

    /// <summary>Adds ΔW = scale·B·A [out, in] to <paramref name="weight"/> [out, in], each row's ΔW summed over r in fp32 first.</summary>
    public void FoldInto(Span<float> weight)
    {
        int r = Rank, inFeatures = A.Shape[1], outFeatures = B.Shape[0];
        if (weight.Length != (long)outFeatures * inFeatures)
            throw new ArgumentException($"weight has {weight.Length} elements, the adapter is [{outFeatures}, {inFeatures}]", nameof(weight));
        float[] a = A.Data, b = B.Data;
        var delta = new float[inFeatures];                                 // [in] one row of B·A
        for (int o = 0; o < outFeatures; o++)
        {
            Array.Clear(delta);
            for (int k = 0; k < r; k++)
            {
                float bk = b[o * r + k];
                if (bk != 0) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(a.AsSpan(k * inFeatures, inFeatures), bk, delta, delta);
            }
            var row = weight.Slice(o * inFeatures, inFeatures);
            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(delta, Scale, row, row);
        }
    }

    public Tensor Forward(Linear layer, Tensor input, Tensor baseOutput)
    {
        var adapterInput = CurrentMask() is { } mask ? Functional.Dropout(input, mask) : input;
        var delta = Functional.Linear(Functional.Linear(adapterInput, A), B);
        return Functional.Add(baseOutput, delta, Scale);
    }

    public LowRankAdapter AsLowRank() => new(A, B, Scale, CurrentMask());

    private DropoutMask? CurrentMask() => Dropout is { } d ? d.Dropout.MaskFor(d.Path) : null;
}
