using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Distillation;

/// <summary>Runs a teacher over tokenised examples and keeps its top-k at every trained position (offline distillation).</summary>
public static class TeacherDumper
{
    /// <summary>
    /// The teacher's top-k of one example: for each position p whose next token carries loss (labels[p + 1] ≠ −100), the k most
    /// likely ids of the teacher's prediction at p and their log-probabilities at τ = 1.
    /// </summary>
    public static KdSequence TopK(DeepSeekModel teacher, TokenizedExample example, int k)
    {
        int[] tokens = example.InputIds;
        var dense = KnowledgeDistillation.RunTeacher(teacher, tokens, SequenceBatch.Training(1, tokens.Length));
        var all = dense.TopK(k);
        var positions = new List<int>();
        for (int p = 0; p + 1 < tokens.Length; p++)
            if (example.Labels[p + 1] != TokenizedExample.IgnoreIndex) positions.Add(p);
        var ids = new int[positions.Count * k];
        var lp = new float[positions.Count * k];
        for (int r = 0; r < positions.Count; r++)
        {
            all.Ids.AsSpan(positions[r] * k, k).CopyTo(ids.AsSpan(r * k, k));
            all.LogProbs.AsSpan(positions[r] * k, k).CopyTo(lp.AsSpan(r * k, k));
        }
        return new KdSequence(tokens, [.. positions], ids, lp, k);
    }

    /// <summary>Dumps every example through <paramref name="writer"/>; reports the examples done after each.</summary>
    public static void Dump(DeepSeekModel teacher, IEnumerable<TokenizedExample> examples, TeacherDumpWriter writer, IProgress<long>? progress = null,
        CancellationToken ct = default)
    {
        long done = 0;
        foreach (var example in examples)
        {
            ct.ThrowIfCancellationRequested();
            if (example.InputIds.Length >= 2) writer.Add(TopK(teacher, example, writer.K));
            progress?.Report(++done);
        }
        writer.Complete();
    }
}
