using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// DeepSeekMoE: y = Σ_j w_j · Expert_idx_j(x) + SharedExperts(x). Tokens are grouped by expert, each expert runs
/// one GEMM over its rows, and the weighted outputs are scattered back (model.md, DeepSeekMoE).
/// </summary>
public sealed class Moe : Module
{
    private readonly int _hidden;

    public Moe(DeepSeekConfig c, bool materialize)
    {
        _hidden = c.HiddenSize;
        Gate = Child("gate", new Gate(c, materialize));
        Experts = Child("experts", new ModuleList<Mlp>());
        for (int e = 0; e < c.NRoutedExperts!.Value; e++) Experts.Add(new Mlp(c.HiddenSize, c.MoeIntermediateSize, materialize));
        if (c.NSharedExperts is > 0)
            SharedExperts = Child("shared_experts", new Mlp(c.HiddenSize, c.NSharedExperts.Value * c.MoeIntermediateSize, materialize));
    }

    public Gate Gate { get; }
    public ModuleList<Mlp> Experts { get; }
    public Mlp? SharedExperts { get; }

    /// <param name="x">[N, H]</param>
    /// <returns>[N, H]</returns>
    public Tensor Forward(Tensor x)
    {
        var (_, idx, weights) = Gate.Forward(x);
        int k = Gate.TopK, n = x.Shape[0];
        // Group token slots by expert (counting sort keeps tokens in order within an expert).
        var counts = new int[Experts.Count];
        foreach (int e in idx) counts[e]++;
        var tokens = new int[Experts.Count][];
        var slots = new int[Experts.Count][];
        for (int e = 0; e < counts.Length; e++) { tokens[e] = new int[counts[e]]; slots[e] = new int[counts[e]]; }
        Array.Clear(counts);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++)
            {
                int e = idx[t * k + j];
                tokens[e][counts[e]] = t;
                slots[e][counts[e]++] = j;
            }
        var active = new List<int>();
        for (int e = 0; e < counts.Length; e++) if (counts[e] > 0) active.Add(e);
        var outputs = new Tensor[active.Count];
        var activeTokens = new int[active.Count][];
        var activeSlots = new int[active.Count][];
        for (int a = 0; a < active.Count; a++)
        {
            int e = active[a];
            Tensor routed = Functional.GatherRows(x, tokens[e]);                   // [n_e, H]
            outputs[a] = Experts[e].Forward(routed);
            routed.ReleaseIfUnread();
            activeTokens[a] = tokens[e];
            activeSlots[a] = slots[e];
        }
        Tensor y = Functional.MoeCombine(weights, outputs, activeTokens, activeSlots, _hidden);
        if (SharedExperts is null) return y;
        Tensor shared = SharedExperts.Forward(x);
        Tensor sum = Functional.Add(y, shared);
        y.ReleaseIfUnread(); // the sum's backward needs neither operand's values
        shared.ReleaseIfUnread();
        return sum;
    }
}
