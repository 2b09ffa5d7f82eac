using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>
/// LoRA on one <see cref="Linear"/> (training.md, LoRA): y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ with A [r, in], B [out, r] and
/// scale = α/r (α/√r with rsLoRA). W is left as it is (frozen by <see cref="LoraAdapters.Apply"/>); A and B are the
/// trained parameters, registered on the Linear as <c>lora_A.weight</c> and <c>lora_B.weight</c> (PEFT's names).
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

    public Tensor Forward(Linear layer, Tensor input, Tensor baseOutput)
    {
        var delta = Functional.Linear(Functional.Linear(input, A), B);
        return Functional.Add(baseOutput, delta, Scale);
    }
}
