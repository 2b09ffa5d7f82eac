namespace DeepSeekSharp.Rl;

/// <summary>How the per-token GRPO losses of a batch are summed into one number (TRL's <c>loss_type</c>).</summary>
public enum GrpoLossType
{
    /// <summary>Each completion's mean over its tokens, then the mean over completions (DeepSeekMath's GRPO).</summary>
    Grpo,
    /// <summary>The mean over all completion tokens of the batch.</summary>
    Bnpo,
    /// <summary>The sum over tokens divided by completions × max_completion_length (Dr. GRPO: no length bias).</summary>
    DrGrpo,
    /// <summary>The sum over tokens divided by the batch's completion tokens (DAPO's token-level normalisation).</summary>
    Dapo,
}

/// <summary>GRPO's loss settings, TRL's names: <c>beta</c>, <c>epsilon</c>, <c>epsilon_high</c>, <c>loss_type</c>, <c>max_completion_length</c>.</summary>
public sealed record GrpoSettings(float Beta = 0f, float Epsilon = 0.2f, float? EpsilonHigh = null, GrpoLossType LossType = GrpoLossType.Dapo,
    int MaxCompletionLength = 256)
{
    public float EpsilonLow => Epsilon;
    public float EpsilonUpper => EpsilonHigh ?? Epsilon;
}

/// <summary>
/// The completion tokens of one micro-batch, one row per token position of the packed/padded batch: the completion
/// a row belongs to (−1 for prompt and padding rows, which take no loss), each completion's advantage, and the
/// log-probabilities of the sampled tokens under the behaviour policy (null: the policy being trained, so every ratio
/// is 1) and under the frozen reference (null when β = 0).
/// </summary>
public sealed record GrpoTokens(int[] CompletionOfRow, float[] Advantages, float[]? BehaviourLogProbs, float[]? ReferenceLogProbs);

/// <summary>
/// The global batch the loss is normalised over, so that micro-batches (and ranks) add up to the batch's loss:
/// its completions and its completion tokens.
/// </summary>
public readonly record struct GrpoBatchSize(int Completions, long CompletionTokens);

/// <summary>What one evaluation of the objective gives: the loss, dL/dlogp per row, and TRL's metrics (sums, to be pooled).</summary>
public sealed record GrpoTerms(double Loss, float[] LogProbGradient, long Tokens, double KlSum, long LowClipped, long HighClipped);

/// <summary>
/// GRPO's clipped objective with a k3 KL penalty (DeepSeekMath; DeepSeek-R1), per sampled token t of completion i:
/// <code>
///   ρ_t = exp(logπ_θ(o_t) − logπ_old(o_t)),   ρ̂_t = clip(ρ_t, 1 − ε_low, 1 + ε_high)
///   ℓ_t = −min(ρ_t·Â_i, ρ̂_t·Â_i) + β·(exp(logπ_ref − logπ_θ) − (logπ_ref − logπ_θ) − 1)
/// </code>
/// summed with the weights of <see cref="GrpoLossType"/>. The derivative is written out here, per token, because the
/// log-probabilities come from a fused head op: d(−min)/dlogπ_θ = −ρ_t·Â_i where the unclipped term is the smaller
/// (ties included: the clipped branch then has ρ inside the range and the same derivative), 0 where the clip is
/// active; d(k3)/dlogπ_θ = 1 − exp(logπ_ref − logπ_θ). The trainer backpropagates Σ_t (dL/dlogπ_t)·logπ_t.
/// </summary>
public static class GrpoObjective
{
    /// <param name="logProbs">[rows] logπ_θ of each row's sampled token (0 for rows outside completions)</param>
    public static GrpoTerms Evaluate(ReadOnlySpan<float> logProbs, GrpoTokens tokens, GrpoSettings settings, GrpoBatchSize batch)
    {
        int rows = logProbs.Length;
        var completionOfRow = tokens.CompletionOfRow;
        if (completionOfRow.Length != rows) throw new ArgumentException($"GRPO: {completionOfRow.Length} row labels for {rows} log-probabilities");
        if (tokens.BehaviourLogProbs is { } b && b.Length != rows) throw new ArgumentException($"GRPO: {b.Length} behaviour log-probabilities for {rows} rows");
        if (settings.Beta != 0 && tokens.ReferenceLogProbs is null) throw new ArgumentException("GRPO: beta ≠ 0 needs the reference log-probabilities");
        if (tokens.ReferenceLogProbs is { } r && r.Length != rows) throw new ArgumentException($"GRPO: {r.Length} reference log-probabilities for {rows} rows");

        // Tokens per completion (the grpo loss type averages within each completion first).
        var lengths = new int[tokens.Advantages.Length];
        foreach (int c in completionOfRow)
            if (c >= 0) lengths[c]++;
        double tokenWeight = settings.LossType switch
        {
            GrpoLossType.Grpo => 0, // per completion, below
            GrpoLossType.DrGrpo => 1.0 / ((double)batch.Completions * settings.MaxCompletionLength),
            _ => 1.0 / Math.Max(1, batch.CompletionTokens),
        };
        float lo = 1f - settings.EpsilonLow, hi = 1f + settings.EpsilonUpper;
        var gradient = new float[rows];
        double loss = 0, klSum = 0;
        long count = 0, lowClipped = 0, highClipped = 0;
        for (int t = 0; t < rows; t++)
        {
            int c = completionOfRow[t];
            if (c < 0) continue;
            float a = tokens.Advantages[c], logp = logProbs[t];
            double ratio = tokens.BehaviourLogProbs is { } old ? Math.Exp(logp - old[t]) : 1.0;
            double clipped = Math.Clamp(ratio, lo, hi);
            double unclippedTerm = ratio * a, clippedTerm = clipped * a;
            double perToken = -Math.Min(unclippedTerm, clippedTerm);
            double dPerToken = unclippedTerm <= clippedTerm ? -ratio * a : 0;
            if (ratio < lo && a < 0) lowClipped++;
            if (ratio > hi && a > 0) highClipped++;
            if (tokens.ReferenceLogProbs is { } reference)
            {
                double delta = reference[t] - logp, e = Math.Exp(delta);
                double kl = e - delta - 1;
                klSum += kl;
                perToken += settings.Beta * kl;
                dPerToken += settings.Beta * (1 - e);
            }
            double weight = settings.LossType == GrpoLossType.Grpo ? 1.0 / ((double)lengths[c] * batch.Completions) : tokenWeight;
            loss += weight * perToken;
            gradient[t] = (float)(weight * dPerToken);
            count++;
        }
        return new GrpoTerms(loss, gradient, count, klSum, lowClipped, highClipped);
    }
}
