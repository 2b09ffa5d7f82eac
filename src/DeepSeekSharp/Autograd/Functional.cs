using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd;

/// <summary>
/// The differentiable ops, like torch.nn.functional. Each records a node (forward + backward kernel) when grad
/// mode is on and an input requires grad.
/// </summary>
public static class Functional
{
    /// <summary>x [.., in] · W[out, in]ᵀ → [.., out].</summary>
    public static Tensor Linear(Tensor x, Tensor weight) => LinearOp.Forward(x, weight);

    /// <summary>Linear with FP8 (E4M3, fine-grained scales) inputs to all three GEMMs; caches its input in FP8.</summary>
    public static Tensor LinearFp8(Tensor x, Tensor weight, bool e5m6InputCache = false) => Fp8LinearOp.Forward(x, weight, e5m6InputCache);

    /// <summary>x · Wᵀ with a frozen weight kept compressed (BF16 or FP8 blocks): the input gets its gradient, the weight none.</summary>
    public static Tensor LinearCompressed(Tensor x, CompressedWeight w) => CompressedLinearOp.Forward(x, w);

    /// <summary>BF16-rounded copy with a straight-through gradient (bf16 compute over fp32 master weights).</summary>
    public static Tensor RoundBf16(Tensor x) => RoundBf16Op.Forward(x);

    public static Tensor RmsNorm(Tensor x, Tensor weight, float eps) => RmsNormOp.Forward(x, weight, eps);

    /// <summary>a + bScale·b (the residual sum; LoRA adds its scaled low-rank path with bScale = α/r).</summary>
    public static Tensor Add(Tensor a, Tensor b, float bScale = 1f) => AddOp.Forward(a, b, bScale);

    /// <summary>silu(a) ⊙ b; with <paramref name="fp8InputCache"/> the backward keeps a and b as FP8 (E4M3, 1×128 scales)
    /// instead of fp32 (DeepSeek-V3's FP8 recipe).</summary>
    public static Tensor SiluMul(Tensor a, Tensor b, bool fp8InputCache = false) => SiluMulOp.Forward(a, b, fp8InputCache);

    /// <summary>silu(a) ⊙ b whose inputs are cached in FP8 for the backward (DeepSeek-V3's FP8 recipe).</summary>
    public static Tensor SiluMulFp8Cache(Tensor a, Tensor b) => SiluMulOp.Forward(a, b, fp8Cache: true);

    public static Tensor Sigmoid(Tensor x) => SigmoidOp.Forward(x);

    public static Tensor Softmax(Tensor x) => SoftmaxOp.Forward(x);

    public static Tensor SliceLast(Tensor x, int start, int length) => SliceLastOp.Forward(x, start, length);

    public static Tensor ConcatLast(Tensor a, Tensor b) => ConcatLastOp.Forward(a, b);

    public static Tensor Reshape(Tensor x, params int[] shape) => ReshapeOp.Forward(x, shape);

    public static Tensor GatherRows(Tensor x, int[] rows) => GatherRowsOp.Forward(x, rows);

    public static Tensor Embedding(Tensor weight, int[] ids) => EmbeddingOp.Forward(weight, ids);

    /// <summary>Rows of a frozen, compressed table [vocab, hidden] widened to fp32 (no gradient).</summary>
    public static Tensor EmbeddingFrozen(CompressedWeight weight, int[] ids) => EmbeddingOp.ForwardFrozen(weight, ids);

    public static Tensor Rope(Tensor x, int groups, int stride, int offset, int ropeDim, int[] positions, float[] cos, float[] sin) =>
        RopeOp.Forward(x, groups, stride, offset, ropeDim, positions, cos, sin);

    public static Tensor MlaAttention(Tensor q, Tensor kvb, Tensor kpe, MlaAttentionShape shape) => MlaAttentionOp.Forward(q, kvb, kpe, shape);

    /// <summary>Cross-entropy summed over rows with target ≥ 0, divided by their count (a mean) or by <paramref name="divisor"/>; a scalar [1].</summary>
    public static Tensor CrossEntropy(Tensor logits, int[] targets, long? divisor = null) => CrossEntropyOp.Forward(logits, targets, divisor);

    /// <summary>CrossEntropy(Linear(h, weight), targets) without materialising the logits (output heads over large vocabularies).</summary>
    public static Tensor LinearCrossEntropy(Tensor h, Tensor weight, int[] targets, long? divisor = null) => LinearCrossEntropyOp.Forward(h, weight, targets, divisor);

    /// <summary>Σ_i c_i · x_i as a scalar [1] (gradient c).</summary>
    public static Tensor Dot(Tensor x, float[] coefficients) => DotOp.Forward(x, coefficients);

    /// <summary>Per-row log-probability of the target under softmax(h·Wᵀ/τ), [rows]; 0 where the target is −1 (see <see cref="TokenLogProbOp"/>).</summary>
    public static Tensor TokenLogProbs(Tensor h, Tensor weight, int[] targets, float temperature = 1f) => TokenLogProbOp.Forward(h, weight, targets, temperature);

    public static Tensor WeightedSum(Tensor[] scalars, float[] weights) => WeightedSumOp.Forward(scalars, weights);

    /// <summary>α·Σ_e f_e·P_e per group of <paramref name="groupRows"/> rows, averaged over groups (a scalar [1]).</summary>
    public static Tensor BalanceLoss(Tensor scores, int[] idx, int k, int groupRows, float alpha) =>
        BalanceLossOp.Forward(scores, idx, k, groupRows, alpha);

    public static Tensor RouteWeights(Tensor scores, int[] idx, int k, bool normalize, float scale) =>
        RouteWeightsOp.Forward(scores, idx, k, normalize, scale);

    /// <summary>y[t] = Σ_j w[t, j] · stacked[row of (t, j)] (see <see cref="MoeCombineOp"/>).</summary>
    /// <param name="weights">[N, k]</param>
    /// <param name="stacked">[S, H] expert outputs grouped by expert</param>
    /// <param name="bf16Cache">keep the expert outputs for the backward as BF16 (V3's FP8 recipe) instead of reading them</param>
    /// <returns>[N, H]</returns>
    public static Tensor MoeCombine(Tensor weights, Tensor stacked, int[] rowToken, int[] rowSlot, bool bf16Cache = false) =>
        MoeCombineOp.Forward(weights, stacked, rowToken, rowSlot, bf16Cache);

    /// <summary>
    /// Runs expert e on rows <c>x[rows[offsets[e]..offsets[e+1])]</c> for every expert, concurrently, and returns the
    /// outputs stacked [rows.Length, H] (see <see cref="RoutedExpertsOp"/>).
    /// </summary>
    public static Tensor RoutedExperts(Tensor x, int[] rows, int[] offsets, Func<int, Tensor, Tensor> expert) =>
        RoutedExpertsOp.Forward(x, rows, offsets, expert);

    /// <summary>
    /// The routed SwiGLU experts of a layer as grouped GEMMs on rows <c>x[rows]</c> grouped by <paramref name="offsets"/>
    /// (one call per projection for all experts), outputs stacked [rows.Length, H] (see <see cref="GroupedExpertsOp"/>).
    /// </summary>
    public static Tensor GroupedSwiGluExperts(Tensor x, int[] rows, int[] offsets, IReadOnlyList<Tensor> gateWeights,
        IReadOnlyList<Tensor> upWeights, IReadOnlyList<Tensor> downWeights) =>
        GroupedExpertsOp.Forward(x, rows, offsets, [.. gateWeights.Select(w => new ExpertLinear(w))], [.. upWeights.Select(w => new ExpertLinear(w))],
            [.. downWeights.Select(w => new ExpertLinear(w))]);

    /// <summary>
    /// <see cref="GroupedSwiGluExperts(Tensor, int[], int[], IReadOnlyList{Tensor}, IReadOnlyList{Tensor}, IReadOnlyList{Tensor})"/>
    /// with each projection's weight fp32 or stored compressed, and an optional low-rank (LoRA) path per projection.
    /// </summary>
    public static Tensor GroupedSwiGluExperts(Tensor x, int[] rows, int[] offsets, IReadOnlyList<ExpertLinear> gate,
        IReadOnlyList<ExpertLinear> up, IReadOnlyList<ExpertLinear> down) =>
        GroupedExpertsOp.Forward(x, rows, offsets, gate, up, down);

    /// <summary>
    /// The routed SwiGLU experts with DeepSeek-V3's FP8 recipe as grouped GEMMs (see <see cref="GroupedFp8ExpertsOp"/>):
    /// the values and gradients of running each expert as FP8 Linears (<see cref="LinearFp8"/>) around
    /// <see cref="SiluMul"/>, with the SwiGLU inputs cached in FP8 when <paramref name="fp8SwiGluCache"/>.
    /// </summary>
    /// <param name="x">[N, H]</param>
    /// <param name="gateWeights">E weights [I, H]</param>
    /// <param name="upWeights">E weights [I, H]</param>
    /// <param name="downWeights">E weights [H, I]</param>
    /// <returns>[rows.Length, H]</returns>
    public static Tensor GroupedSwiGluExpertsFp8(Tensor x, int[] rows, int[] offsets, IReadOnlyList<Tensor> gateWeights,
        IReadOnlyList<Tensor> upWeights, IReadOnlyList<Tensor> downWeights, bool fp8SwiGluCache = true) =>
        GroupedFp8ExpertsOp.Forward(x, rows, offsets, gateWeights, upWeights, downWeights, fp8SwiGluCache);

    /// <summary>
    /// The routed experts split over an expert-parallel group: rows dispatched to the rank holding their expert, run
    /// there as grouped GEMMs, combined back in stacked order (see <see cref="ExpertParallelOp"/>). A collective.
    /// </summary>
    public static Tensor ExpertParallel(Tensor x, int[] rows, int[] offsets, Models.DeepSeekV3.ExpertShard shard) =>
        ExpertParallelOp.Forward(x, rows, offsets, shard);

    /// <summary>Whether <see cref="GroupedSwiGluExperts(Tensor, int[], int[], IReadOnlyList{ExpertLinear}, IReadOnlyList{ExpertLinear}, IReadOnlyList{ExpertLinear})"/>
    /// can run these experts (the adapters of each projection share a rank).</summary>
    public static bool CanGroupSwiGluExperts(IReadOnlyList<ExpertLinear> gate, IReadOnlyList<ExpertLinear> up, IReadOnlyList<ExpertLinear> down) =>
        GroupedExpertsOp.Supports(gate, up, down);

    /// <summary>Inverted dropout x ⊙ mask/(1 − p) with a mask regenerated from its key in the backward.</summary>
    public static Tensor Dropout(Tensor x, DropoutMask mask) => DropoutOp.Forward(x, mask);
}
