using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>One sequence to score: its tokens [T] and which positions count (null: all of them).</summary>
/// <param name="Counted">[T] true where the position's routing counts (a fine-tuning example's trained tokens)</param>
public sealed record ScoringSequence(int[] Tokens, bool[]? Counted = null)
{
    public int CountedTokens => Counted is null ? Tokens.Length : Counted.Count(c => c);
}

/// <summary>
/// ESFT's expert relevance scores (training.md, ESFT), measured by running the model without gradients over sample
/// sequences. For layer l, expert i, with K experts per token, L_seq the counted tokens of a sequence and N the
/// sequences with at least one counted token:
/// token score r_i = 1/N · Σ_seq 1/L_seq · Σ_t 1[i chosen for t] / K;
/// gate score g_i = 1/N · Σ_seq 1/L_seq · Σ_t g_{i,t}, with g_{i,t} the weight with which expert i enters token t's
/// MoE sum: its affinity score (sigmoid for V3, softmax for V2), divided by the sum over the token's K chosen experts
/// when norm_topk_prob (+1e-20, as the forward), never multiplied by routed_scaling_factor, 0 when not chosen.
/// The balancing bias steers which experts are chosen but is not part of g. Only the decoder's MoE layers are scored
/// (the MTP layers do not run).
/// </summary>
public static class ExpertScorer
{
    public static ExpertScores Score(DeepSeekModel model, IEnumerable<ScoringSequence> sequences, IProgress<int>? progress = null, CancellationToken ct = default)
    {
        var c = model.Config;
        int experts = c.NRoutedExperts ?? throw new DeepSeekSharpException("the model has no routed experts to score");
        int k = c.NumExpertsPerTok!.Value;
        bool normalize = c.NormTopkProb == true;
        var layers = Enumerable.Range(0, model.Layers.Count).Where(l => model.Layers[l].Moe is not null).ToArray();
        if (layers.Length == 0) throw new DeepSeekSharpException("the model has no MoE layer to score");
        // Per layer: this sequence's sums, and the sum over sequences of each sequence's sums / L_seq. Double throughout.
        var seqToken = layers.Select(_ => new double[experts]).ToArray();
        var seqGate = layers.Select(_ => new double[experts]).ToArray();
        var totalToken = layers.Select(_ => new double[experts]).ToArray();
        var totalGate = layers.Select(_ => new double[experts]).ToArray();
        bool[]? counted = null;
        var gates = layers.Select(l => model.Layers[l].Moe!.Gate).ToArray();
        try
        {
            for (int g = 0; g < gates.Length; g++)
            {
                int slot = g;
                gates[g].Observer = (scores, indices) => Accumulate(scores, indices, counted, experts, k, normalize, seqToken[slot], seqGate[slot]);
            }
            int n = 0;
            long tokens = 0;
            using var noGrad = GradMode.NoGrad();
            foreach (var sequence in sequences)
            {
                ct.ThrowIfCancellationRequested();
                int length = sequence.CountedTokens;
                if (length == 0) continue;
                if (sequence.Counted is { } mask && mask.Length != sequence.Tokens.Length)
                    throw new ArgumentException($"a mask of {mask.Length} for {sequence.Tokens.Length} tokens");
                counted = sequence.Counted;
                foreach (var s in seqToken) Array.Clear(s);
                foreach (var s in seqGate) Array.Clear(s);
                using (TensorScope.Begin())
                    model.ForwardHidden(sequence.Tokens, SequenceBatch.Training(1, sequence.Tokens.Length));
                for (int g = 0; g < layers.Length; g++)
                    for (int e = 0; e < experts; e++)
                    {
                        totalToken[g][e] += seqToken[g][e] / length;
                        totalGate[g][e] += seqGate[g][e] / length;
                    }
                n++;
                tokens += length;
                progress?.Report(n);
            }
            if (n == 0) throw new DeepSeekSharpException("no sequence with a counted token to score");
            foreach (var table in totalToken.Concat(totalGate))
                for (int e = 0; e < experts; e++) table[e] /= n;
            return new ExpertScores(
                [.. layers.Select((l, g) => LayerScores.Ordered(l, totalToken[g]))],
                [.. layers.Select((l, g) => LayerScores.Ordered(l, totalGate[g]))], n, tokens);
        }
        finally
        {
            foreach (var gate in gates) gate.Observer = null;
        }
    }

    /// <param name="scores">[N, E]</param>
    /// <param name="indices">[N·k]</param>
    /// <param name="counted">[N] or null (all)</param>
    private static void Accumulate(ReadOnlySpan<float> scores, int[] indices, bool[]? counted, int experts, int k, bool normalize,
        double[] tokenSums, double[] gateSums)
    {
        int n = indices.Length / k;
        for (int t = 0; t < n; t++)
        {
            if (counted is not null && !counted[t]) continue;
            var row = scores.Slice(t * experts, experts);
            var chosen = indices.AsSpan(t * k, k);
            // The forward's normaliser: the float sum of the chosen scores, + 1e-20.
            float sum = 0;
            foreach (int e in chosen) sum += row[e];
            double divisor = normalize ? sum + 1e-20f : 1.0;
            foreach (int e in chosen)
            {
                tokenSums[e] += 1.0 / k;
                gateSums[e] += row[e] / divisor;
            }
        }
    }
}
