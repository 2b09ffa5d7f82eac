using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// DeepSeekMoE: y = SharedExperts(x) + Σ_j w_j · Expert_idx_j(x) (model.md, DeepSeekMoE). Tokens are grouped by expert,
/// the experts run concurrently on their rows (<see cref="Functional.RoutedExperts"/>), and the weighted outputs are
/// summed back per token.
/// </summary>
public sealed class Moe : Layer
{
    public Moe(DeepSeekConfig c, bool materialize)
    {
        Gate = Child("gate", new Gate(c, materialize));
        Experts = Child("experts", new ModuleList<Mlp>());
        for (int e = 0; e < c.NRoutedExperts!.Value; e++) Experts.Add(new Mlp(c.HiddenSize, c.MoeIntermediateSize, materialize));
        if (c.NSharedExperts is > 0)
            SharedExperts = Child("shared_experts", new Mlp(c.HiddenSize, c.NSharedExperts.Value * c.MoeIntermediateSize, materialize));
    }

    public Gate Gate { get; }
    public ModuleList<Mlp> Experts { get; }
    public Mlp? SharedExperts { get; }

    /// <summary>
    /// Run the routed experts as grouped GEMMs, all experts in one call per projection (default), whenever every
    /// expert's Linears allow it: fp32 weights or a frozen base kept as stored (BF16, FP8 blocks), each optionally with
    /// a LoRA adapter (the adapters of one projection sharing a rank; experts without one add nothing); or, with
    /// <c>precision: fp8</c>, FP8 compute on fp32 master weights without adapters (<see cref="Functional.GroupedSwiGluExpertsFp8"/>,
    /// SwiGLU inputs cached in FP8 or fp32 as the experts' <see cref="Mlp.Fp8SwigluCache"/> says). BF16 compute and FP8
    /// experts with adapters or stored weights take the per-expert module path. Off forces the module path (tests compare
    /// the two). Decoding-sized experts (a few rows each) stream their weights inside the grouped call
    /// (<see cref="Kernels.Cpu.Sgemm.MultiplyGrouped"/>) as the module path would.
    /// </summary>
    public bool GroupedExperts { get; set; } = true;

    /// <summary>The combine keeps the routed experts' outputs for its backward (the routing weights' gradient) in BF16
    /// rather than fp32 (DeepSeek-V3's FP8 recipe; set by precision fp8 and <c>fp8_bf16_combine</c>).</summary>
    public bool Bf16CombineCache { get; set; }

    /// <summary>
    /// Set for expert-parallel training: this rank computes only its block of the routed experts, for the rows every
    /// rank of the group routes to them (<see cref="Autograd.Ops.ExpertParallelOp"/>); null: every expert runs here.
    /// </summary>
    public ExpertShard? Shard { get; set; }

    /// <summary>The routed experts as grouped GEMMs, or null when they must run as modules (see <see cref="GroupedExperts"/>).</summary>
    private Tensor? GroupedExpertsForward(Tensor x, int[] rowToken, int[] offsets)
    {
        if (!GroupedExperts) return null;
        if (Fp8GroupedExperts(x, rowToken, offsets) is { } fp8) return fp8;
        var gate = new ExpertLinear[Experts.Count];
        var up = new ExpertLinear[Experts.Count];
        var down = new ExpertLinear[Experts.Count];
        for (int e = 0; e < Experts.Count; e++)
        {
            var expert = Experts[e];
            if (expert.Fp8SwigluCache
                || expert.GateProj.AsExpertLinear() is not { } g || expert.UpProj.AsExpertLinear() is not { } u || expert.DownProj.AsExpertLinear() is not { } d)
                return null;
            (gate[e], up[e], down[e]) = (g, u, d);
        }
        return Functional.CanGroupSwiGluExperts(gate, up, down) ? Functional.GroupedSwiGluExperts(x, rowToken, offsets, gate, up, down) : null;
    }

    /// <summary>The FP8 routed experts as grouped GEMMs, or null unless every expert computes plainly in FP8: all three
    /// Linears FP8 on their own fp32 weight (no adapter, no stored weight) and one SwiGLU cache setting for all.</summary>
    private Tensor? Fp8GroupedExperts(Tensor x, int[] rowToken, int[] offsets)
    {
        if (Experts.Count == 0) return null;
        bool swigluCache = Experts[0].Fp8SwigluCache;
        var weights = new Tensor[3 * Experts.Count];
        for (int e = 0; e < Experts.Count; e++)
        {
            var expert = Experts[e];
            if (expert.Fp8SwigluCache != swigluCache) return null;
            Linear[] projections = [expert.GateProj, expert.UpProj, expert.DownProj];
            for (int p = 0; p < 3; p++)
            {
                var linear = projections[p];
                if (!linear.Fp8Compute || linear.Bf16Compute || linear.Fp8E5M6InputCache || linear.Adapter is not null
                    || linear.InferenceWeight is not null || linear.Weight.IsMeta)
                    return null;
                weights[p * Experts.Count + e] = linear.Weight;
            }
        }
        int n = Experts.Count;
        return Functional.GroupedSwiGluExpertsFp8(x, rowToken, offsets, weights[..n], weights[n..(2 * n)], weights[(2 * n)..], swigluCache);
    }

    /// <param name="x">[N, H]</param>
    /// <returns>[N, H]</returns>
    protected override Tensor Compute(Tensor x)
    {
        Tensor? shared = SharedExperts?.Forward(x);                                       // Σ FFN^(s)(x) [N, H]
        var (_, idx, weights) = Gate.Forward(x);                                          // top-k experts and g [N, k]
        var rows = RoutedRows.Group(idx, Gate.TopK, Experts.Count);                     // token slots grouped by expert
        Tensor stacked = Shard is { } shard ? Functional.ExpertParallel(x, rows.Token, rows.Offsets, shard)
            : GroupedExpertsForward(x, rows.Token, rows.Offsets)                          // Expert_e(x_t) [N·k, H]
            ?? Functional.RoutedExperts(x, rows.Token, rows.Offsets, (e, expertRows) => Experts[e].Forward(expertRows));
        Tensor y = Functional.MoeCombine(weights, stacked, rows.Token, rows.Slot, Bf16CombineCache); // Σ_j g_j · Expert_j(x)
        return shared is null ? y : Functional.Add(shared, y);
    }
}
