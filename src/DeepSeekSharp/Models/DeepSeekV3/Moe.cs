using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// DeepSeekMoE: y = Σ_j w_j · Expert_idx_j(x) + SharedExperts(x) (model.md, DeepSeekMoE). Tokens are grouped by expert,
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
        var (_, idx, weights) = Gate.Forward(x);                                          // top-k experts and g [N, k]
        var rows = RoutedRows.Group(idx, Gate.TopK, Experts.Count);
        Tensor stacked = CanGroupExperts()                                                // Expert_e(x_t) [N·k, H]
            ? GroupedExpertsForward(x, rows.Token, rows.Offsets)
            : Functional.RoutedExperts(x, rows.Token, rows.Offsets, (e, expertRows) => Experts[e].Forward(expertRows));
        Tensor y = Functional.MoeCombine(weights, stacked, rows.Token, rows.Slot);       // Σ_j g_j · Expert_j(x)
        return SharedExperts is null ? y : Functional.Add(y, SharedExperts.Forward(x));
    }

    /// <summary>
    /// Token slots grouped by expert: stacked row r holds token <see cref="Token"/>[r]'s slot <see cref="Slot"/>[r];
    /// expert e owns rows Offsets[e]..Offsets[e+1].
    /// </summary>
    private readonly record struct RoutedRows(int[] Token, int[] Slot, int[] Offsets)
    {
        /// <summary>A counting sort of the chosen experts <paramref name="idx"/> [N·k]: tokens stay in order within an expert.</summary>
        public static RoutedRows Group(int[] idx, int k, int experts)
        {
            int n = idx.Length / k;
            var offsets = new int[experts + 1];
            foreach (int e in idx) offsets[e + 1]++;
            for (int e = 0; e < experts; e++) offsets[e + 1] += offsets[e];
            var token = new int[n * k];
            var slot = new int[n * k];
            var fill = (int[])offsets.Clone();
            for (int t = 0; t < n; t++)
                for (int j = 0; j < k; j++)
                {
                    int r = fill[idx[t * k + j]]++;
                    token[r] = t;
                    slot[r] = j;
                }
            return new RoutedRows(token, slot, offsets);
        }
    }
}
