namespace DeepSeekSharp.Distillation;

/// <summary>
/// One sequence with its teacher's top-k per trained position: <see cref="Tokens"/> [T] input ids; row r (of
/// <see cref="Positions"/>.Length) is the teacher's distribution over the token at position <see cref="Positions"/>[r] + 1,
/// i.e. what the student's row <see cref="Positions"/>[r] predicts: <see cref="Ids"/> [rows, K] (−1 = an empty slot) and
/// <see cref="LogProbs"/> [rows, K] (log-probabilities at τ = 1, most likely first).
/// </summary>
public sealed record KdSequence(int[] Tokens, int[] Positions, int[] Ids, float[] LogProbs, int K)
{
    /// <summary>A key of the token ids (FNV-1a, 64-bit), how the trainer finds a document's rows in a dump.</summary>
    public static ulong Key(ReadOnlySpan<int> tokens)
    {
        ulong h = 14695981039346656037UL;
        foreach (int t in tokens)
        {
            h ^= (uint)t;
            h *= 1099511628211UL;
        }
        return h ^ (ulong)tokens.Length;
    }

    /// <summary>Checks the shapes agree and every position predicts a token inside the sequence.</summary>
    public void Validate(string source)
    {
        if (K <= 0 || Ids.Length != Positions.Length * K || LogProbs.Length != Ids.Length)
            throw new DeepSeekSharpException($"{source}: {Ids.Length} ids and {LogProbs.Length} log-probs for {Positions.Length} rows of top-{K}");
        foreach (int p in Positions)
            if (p < 0 || p + 1 >= Tokens.Length) throw new DeepSeekSharpException($"{source}: position {p} predicts no token of a {Tokens.Length}-token sequence");
    }
}
