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
    /// expert is a plain fp32 SwiGLU; FP8, BF16, adapted (LoRA) or compressed experts always take the per-expert module
    /// path. Off forces the module path (tests compare the two). Decoding-sized experts (a few rows each) stream their
    /// weights inside the grouped call (<see cref="Kernels.Cpu.Sgemm.MultiplyGrouped"/>) as the module path would.
    /// </summary>
    public bool GroupedExperts { get; set; } = true;

    private bool CanGroupExperts()
    {
        if (!GroupedExperts) return false;
        for (int e = 0; e < Experts.Count; e++)
        {
            var expert = Experts[e];
            if (expert.Fp8SwigluCache) return false;
            foreach (var linear in (ReadOnlySpan<Linear>)[expert.GateProj, expert.UpProj, expert.DownProj])
                if (linear.InferenceWeight is not null || linear.Fp8Compute || linear.Bf16Compute || linear.Adapter is not null || linear.Weight.IsMeta)
                    return false;
        }
        return true;
    }

    private Tensor GroupedExpertsForward(Tensor x, int[] rowToken, int[] offsets)
    {
        var gate = new Tensor[Experts.Count];
        var up = new Tensor[Experts.Count];
        var down = new Tensor[Experts.Count];
        for (int e = 0; e < Experts.Count; e++)
            (gate[e], up[e], down[e]) = (Experts[e].GateProj.Weight, Experts[e].UpProj.Weight, Experts[e].DownProj.Weight);
        return Functional.GroupedSwiGluExperts(x, rowToken, offsets, gate, up, down);
    }

    /// <param name="x">[N, H]</param>
    /// <returns>[N, H]</returns>
    protected override Tensor Compute(Tensor x)
    {
        Tensor? shared = SharedExperts?.Forward(x);                                       // Σ FFN^(s)(x) [N, H]
        var (_, idx, weights) = Gate.Forward(x);                                          // top-k experts and g [N, k]
        var rows = RoutedRows.Group(idx, Gate.TopK, Experts.Count);                     // token slots grouped by expert
        Tensor stacked = CanGroupExperts()                                                // Expert_e(x_t) [N·k, H]
            ? GroupedExpertsForward(x, rows.Token, rows.Offsets)
            : Functional.RoutedExperts(x, rows.Token, rows.Offsets, (e, expertRows) => Experts[e].Forward(expertRows));
        Tensor y = Functional.MoeCombine(weights, stacked, rows.Token, rows.Slot);       // Σ_j g_j · Expert_j(x)
        return shared is null ? y : Functional.Add(shared, y);
    }
}
