using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>What a <see cref="Gate"/> hands its observer after a forward.</summary>
/// <param name="scores">[N, E] affinity scores s (sigmoid or softmax, without the balancing bias)</param>
/// <param name="indices">[N·k] the chosen experts, best first</param>
public delegate void RoutingObserver(ReadOnlySpan<float> scores, int[] indices);

/// <summary>
/// The MoE router (model.md, DeepSeekMoE): affinity scores s = sigmoid or softmax of gate·x (fp32, never
/// quantised), selection by s + e_score_correction_bias (noaux_tc: the bias steers selection only), optional
/// group-limited routing, then top-k. Ties always go to the lower expert (or group) index.
/// </summary>
public sealed class Gate : Module
{
    private readonly DeepSeekConfig _c;

    public Gate(DeepSeekConfig c, bool materialize)
    {
        _c = c;
        int e = c.NRoutedExperts!.Value;
        Weight = Param("weight", new Parameter([e, c.HiddenSize], materialize));
        if (c.TopkMethod == "noaux_tc")
            ScoreCorrectionBias = Buffer("e_score_correction_bias", materialize ? Tensor.FromArray(new float[e], e) : Tensor.Meta(e));
    }

    /// <summary>[E, H]</summary>
    public Parameter Weight { get; }

    /// <summary>[E] selection bias (state, not a parameter: updated by the balancing rule, not the optimizer).</summary>
    public Tensor? ScoreCorrectionBias { get; }

    public int Experts => _c.NRoutedExperts!.Value;

    public int TopK => _c.NumExpertsPerTok!.Value;

    /// <summary>Tokens routed to each expert by the last forward (for bias balancing and MaxVio).</summary>
    public long[] LastExpertCounts { get; private set; } = [];

    /// <summary>The experts chosen by the last forward, [N·k] best first (for tests and routing statistics).</summary>
    public int[] LastIndices { get; private set; } = [];

    /// <summary>The scores [N, E] of the last forward, still linked to the graph (for balance losses).</summary>
    public Tensor? LastScores { get; private set; }

    /// <summary>
    /// Called after every forward with the scores [N, E] (without the balancing bias) and the chosen experts [N·k], while
    /// the scores are still alive: a no-grad pass hands them back to the pool when its layer ends (ESFT's expert scoring
    /// reads them here). Null, the default, costs nothing.
    /// </summary>
    public RoutingObserver? Observer { get; set; }

    /// <summary>Scores [N, E] (differentiable), chosen experts [N·k] and their weights [N, k] (differentiable).</summary>
    public (Tensor Scores, int[] Indices, Tensor Weights) Forward(Tensor x)
    {
        Tensor logits = Functional.Linear(x, Weight);                                          // [N, E]
        Tensor scores = _c.ScoringFunc == "sigmoid" ? Functional.Sigmoid(logits) : Functional.Softmax(logits);
        int[] idx = SelectConcurrently(scores);
        Tensor w = Functional.RouteWeights(scores, idx, TopK, _c.NormTopkProb == true, _c.RoutedScalingFactor ?? 1f);
        var counts = new long[Experts];
        foreach (int e in idx) counts[e]++;
        LastExpertCounts = counts;
        LastIndices = idx;
        LastScores = scores;
        Observer?.Invoke(scores.Span, idx);
        return (scores, idx, w);
    }

    /// <summary>
    /// Chooses k experts per token from scores [N, E] (plus the balancing bias, if any); returns [N·k], best first. The
    /// tokens are split over the backend's workers: each token's choice is independent.
    /// </summary>
    private int[] SelectConcurrently(Tensor scores)
    {
        const int RowsPerPiece = 256;
        int e = Experts, n = checked((int)(scores.Length / e));
        var result = new int[n * TopK];
        float[] s = scores.Data;
        float[]? bias = ScoreCorrectionBias is { IsMeta: false } b ? b.Data : null;
        int biasLength = bias is null ? 0 : e;
        scores.Backend.RunConcurrently((n + RowsPerPiece - 1) / RowsPerPiece, piece =>
        {
            int t0 = piece * RowsPerPiece, t1 = Math.Min(n, t0 + RowsPerPiece);
            SelectRows(s.AsSpan(0, n * e), bias.AsSpan(0, biasLength), result, t0, t1);
        });
        return result;
    }

    private void SelectRows(ReadOnlySpan<float> scores, ReadOnlySpan<float> bias, int[] result, int t0, int t1)
    {
        int e = Experts, k = TopK;
        int groups = _c.NGroup ?? 1, keepGroups = _c.TopkGroup ?? groups;
        bool noAux = _c.TopkMethod == "noaux_tc";
        bool grouped = groups > 1 && keepGroups < groups && (noAux || _c.TopkMethod == "group_limited_greedy");
        int perGroup = e / groups;
        Span<float> sel = e <= 1024 ? stackalloc float[e] : new float[e];
        Span<float> groupScore = groups <= 1024 ? stackalloc float[groups] : new float[groups];
        Span<bool> taken = groups <= 1024 ? stackalloc bool[groups] : new bool[groups];
        for (int t = t0; t < t1; t++)
        {
            var s = scores.Slice(t * e, e);
            if (bias.IsEmpty) s.CopyTo(sel);
            else TensorPrimitives.Add(s, bias, sel);
            if (grouped)
            {
                for (int g = 0; g < groups; g++)
                {
                    var gs = (noAux ? sel : s).Slice(g * perGroup, perGroup);
                    groupScore[g] = noAux ? TopTwoSum(gs) : TensorPrimitives.Max(gs);
                }
                taken.Clear();
                for (int j = 0; j < keepGroups; j++)
                {
                    int best = -1;
                    for (int g = 0; g < groups; g++)
                        if (!taken[g] && (best < 0 || groupScore[g] > groupScore[best])) best = g;
                    taken[best] = true;
                }
                for (int g = 0; g < groups; g++)
                    if (!taken[g]) sel.Slice(g * perGroup, perGroup).Fill(float.NegativeInfinity);
            }
            // Top-k by repeated vectorised arg-max (the first of equal scores wins).
            for (int j = 0; j < k; j++)
            {
                int best = TensorPrimitives.IndexOfMax(sel);
                result[t * k + j] = best;
                sel[best] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>The sum of a group's two largest scores (V3's group score under noaux_tc); one pass, no index search.</summary>
    private static float TopTwoSum(ReadOnlySpan<float> v)
    {
        float first = float.NegativeInfinity, second = float.NegativeInfinity;
        foreach (float x in v)
        {
            if (x > first) (second, first) = (first, x);
            else if (x > second) second = x;
        }
        return first + second;
    }
}
