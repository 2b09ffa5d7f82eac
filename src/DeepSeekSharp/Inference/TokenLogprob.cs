namespace DeepSeekSharp.Inference;

/// <summary>
/// A token's log-probability under the model at its position and the most likely ids there, from the
/// log-softmax of that position's logits (natural log). The logits are the model's own, before repetition
/// penalty, temperature, top-k or top-p, so the figures do not depend on how the token was picked (greedy
/// decoding would otherwise give 0 for the pick and −∞ for everything else).
/// </summary>
/// <param name="Token">the id</param>
/// <param name="Logprob">log p(<paramref name="Token"/>)</param>
/// <param name="Top">the most likely ids and their log-probabilities, most likely first (equal ones: lower id first)</param>
public sealed record TokenLogprob(int Token, double Logprob, IReadOnlyList<(int Token, double Logprob)> Top)
{
    /// <param name="logits">one position's logits over the ids that can be produced, (V)</param>
    /// <param name="token">the id whose log-probability is wanted, &lt; V</param>
    /// <param name="top">how many of the most likely ids to list (0 = none)</param>
    public static TokenLogprob FromLogits(ReadOnlySpan<float> logits, int token, int top)
    {
        if ((uint)token >= (uint)logits.Length) throw new DeepSeekSharpException($"token id {token} is outside the vocabulary [0, {logits.Length})");
        double max = double.NegativeInfinity;
        foreach (float z in logits) max = Math.Max(max, z);
        double sum = 0;
        foreach (float z in logits) sum += Math.Exp(z - max);
        double logNormalizer = max + Math.Log(sum);
        // A short list kept in order beats sorting the vocabulary: top is at most a few dozen.
        var best = new List<int>(top + 1);
        for (int i = 0; i < logits.Length && top > 0; i++)
        {
            if (best.Count == top && logits[i] <= logits[best[^1]]) continue;
            int at = best.Count;
            while (at > 0 && logits[best[at - 1]] < logits[i]) at--;
            best.Insert(at, i);
            if (best.Count > top) best.RemoveAt(top);
        }
        var listed = new (int, double)[best.Count];
        for (int r = 0; r < best.Count; r++) listed[r] = (best[r], logits[best[r]] - logNormalizer);
        return new TokenLogprob(token, logits[token] - logNormalizer, listed);
    }
}
