using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Distillation;

/// <summary>What the student is distilled towards, one row per student row (rows whose target is −1 are not read).</summary>
public abstract class TeacherTargets
{
    public abstract int Rows { get; }
}

/// <summary>
/// The teacher's full logits (online distillation): either given as [rows, V] or, so that no [rows, V] tensor need exist
/// for a large vocabulary, as the teacher's final hidden states [rows, H_t] and its output head [V, H_t], multiplied one
/// block of rows at a time.
/// </summary>
public sealed class DenseTeacher : TeacherTargets
{
    private readonly Tensor? _hidden, _head;
    private readonly float[]? _logits;

    private DenseTeacher(Tensor? hidden, Tensor? head, float[]? logits, int rows, int vocab) =>
        (_hidden, _head, _logits, Rows, Vocab) = (hidden, head, logits, rows, vocab);

    public override int Rows { get; }

    public int Vocab { get; }

    /// <param name="logits">[rows, <paramref name="vocab"/>]</param>
    public static DenseTeacher FromLogits(float[] logits, int vocab) => new(null, null, logits, logits.Length / vocab, vocab);

    /// <param name="hidden">[rows, H_t] (after the teacher's final norm)</param>
    /// <param name="head">[V, H_t] the teacher's output head</param>
    public static DenseTeacher FromHidden(Tensor hidden, Tensor head)
    {
        if (hidden.Shape[^1] != head.Shape[1]) throw new ArgumentException($"teacher hidden size {hidden.Shape[^1]} != head input {head.Shape[1]}");
        return new(hidden, head, null, checked((int)(hidden.Length / hidden.Shape[^1])), head.Shape[0]);
    }

    /// <summary>The k most likely ids of every row and their log-probabilities (τ = 1), one block of rows at a time.</summary>
    public TopKTeacher TopK(int k) =>
        k > 0 ? Score(k, default).Top! : throw new ArgumentException($"top-k: k = {k} outside [1, {Vocab}]");

    /// <summary>
    /// One pass over the rows' logits (one block of rows at a time) giving what a scoring request asks: the k most likely ids
    /// of every row (as <see cref="TopK"/>, which is this pass) and, where <paramref name="chosen"/>[r] ≥ 0, that id's
    /// log-probability and its rank (how many ids are at least as likely, itself included: vLLM's count). A served teacher
    /// and a dump therefore read the same floats.
    /// </summary>
    /// <param name="k">ids listed per row (0: none, Top is null)</param>
    /// <param name="chosen">[rows] the id whose log-probability is wanted per row (−1: none), or null</param>
    public TeacherScores Score(int k, ReadOnlySpan<int> chosen)
    {
        if (!chosen.IsEmpty && chosen.Length != Rows) throw new ArgumentException($"{chosen.Length} chosen ids for {Rows} rows");
        int block = Math.Max(1, Math.Min(Rows, (1 << 21) / Vocab));
        var ids = k > 0 ? new int[Rows * k] : null;
        var lp = k > 0 ? new float[Rows * k] : null;
        var chosenLogprobs = new float[chosen.Length];
        var ranks = new int[chosen.Length];
        float[] buffer = StoragePool.Rent(block * Vocab);
        try
        {
            for (int r0 = 0; r0 < Rows; r0 += block)
            {
                int n = Math.Min(block, Rows - r0);
                var logits = buffer.AsSpan(0, n * Vocab);
                FillBlock(r0, n, logits);
                if (k > 0)
                {
                    var part = TopKTeacher.FromLogits(logits, Vocab, k);
                    part.Ids.CopyTo(ids!, r0 * k);
                    part.LogProbs.CopyTo(lp!, r0 * k);
                }
                for (int i = 0; i < n && !chosen.IsEmpty; i++)
                {
                    int id = chosen[r0 + i];
                    if (id < 0) continue;
                    if (id >= Vocab) throw new ArgumentException($"id {id} outside the vocabulary [0, {Vocab})");
                    var row = logits.Slice(i * Vocab, Vocab);
                    // The same float expression as the top-k's, so an id listed there has the same value here.
                    chosenLogprobs[r0 + i] = (float)(row[id] - TopKTeacher.LogSumExp(row));
                    ranks[r0 + i] = AtLeast(row, row[id]);
                }
            }
        }
        finally
        {
            StoragePool.Return(buffer);
        }
        return new TeacherScores(k > 0 ? new TopKTeacher(ids!, lp!, k) : null, chosenLogprobs, ranks);
    }

    /// <summary>How many entries of <paramref name="row"/> are ≥ <paramref name="value"/>.</summary>
    private static int AtLeast(ReadOnlySpan<float> row, float value)
    {
        int count = 0;
        foreach (float x in row) count += x >= value ? 1 : 0;
        return count;
    }

    /// <summary>Writes the logits of rows [r0, r0 + n) into <paramref name="dest"/> [n, V].</summary>
    internal void FillBlock(int r0, int n, Span<float> dest)
    {
        if (_logits is not null)
        {
            _logits.AsSpan(r0 * Vocab, n * Vocab).CopyTo(dest);
            return;
        }
        int h = _head!.Shape[1];
        _hidden!.Backend.Gemm(false, true, n, Vocab, h, 1f, _hidden.Span.Slice(r0 * h, n * h), h, _head.Span, h, 0f, dest, Vocab);
    }
}

/// <summary>What <see cref="DenseTeacher.Score"/> finds per row.</summary>
/// <param name="Top">the k most likely ids and their log-probabilities, or null for k = 0</param>
/// <param name="ChosenLogprobs">[rows] log p(chosen id) at τ = 1 (0 where none was chosen)</param>
/// <param name="ChosenRanks">[rows] how many ids are at least as likely as the chosen one, itself included (1 = the most likely)</param>
public sealed record TeacherScores(TopKTeacher? Top, float[] ChosenLogprobs, int[] ChosenRanks);

/// <summary>
/// The teacher's k most likely ids per row and their log-probabilities at τ = 1 (offline distillation, Axolotl's
/// <c>target_token_ids</c> / <c>logprobs</c>): <see cref="Ids"/> [rows, K] (−1 = an empty slot), <see cref="LogProbs"/> [rows, K].
/// </summary>
public sealed class TopKTeacher : TeacherTargets
{
    public TopKTeacher(int[] ids, float[] logProbs, int k)
    {
        if (k <= 0 || ids.Length != logProbs.Length || ids.Length % k != 0)
            throw new ArgumentException($"top-k teacher: {ids.Length} ids and {logProbs.Length} log-probs do not form rows of {k}");
        (Ids, LogProbs, K) = (ids, logProbs, k);
    }

    public int[] Ids { get; }
    public float[] LogProbs { get; }
    public int K { get; }
    public override int Rows => Ids.Length / K;

    /// <summary>The k largest log-softmax entries of each row of <paramref name="logits"/> [rows, V], most likely first (ties: lower id).</summary>
    public static TopKTeacher FromLogits(ReadOnlySpan<float> logits, int vocab, int k)
    {
        if (k <= 0 || k > vocab) throw new ArgumentException($"top-k: k = {k} outside [1, {vocab}]");
        int rows = logits.Length / vocab;
        var ids = new int[rows * k];
        var lp = new float[rows * k];
        var best = new float[k];
        bool sort = k > SelectionLimit;
        var keys = sort ? new float[vocab] : [];
        var order = sort ? new int[vocab] : [];
        for (int r = 0; r < rows; r++)
        {
            var row = logits.Slice(r * vocab, vocab);
            var rowIds = ids.AsSpan(r * k, k);
            if (sort) SortLargest(row, rowIds, keys, order);
            else SelectLargest(row, rowIds, best);
            double lse = LogSumExp(row);
            for (int i = 0; i < k; i++) lp[r * k + i] = (float)(row[rowIds[i]] - lse);
        }
        return new TopKTeacher(ids, lp, k);
    }

    /// <summary>Up to this k the ids are selected in one pass; beyond it (insertion costs O(k) each) the row is sorted.</summary>
    private const int SelectionLimit = 64;

    /// <summary>The ids of the k largest values by sorting the whole row (large k), ties to the lower id.</summary>
    private static void SortLargest(ReadOnlySpan<float> row, Span<int> ids, float[] keys, int[] order)
    {
        for (int j = 0; j < row.Length; j++) (order[j], keys[j]) = (j, -row[j]);
        Array.Sort(keys, order);
        // Array.Sort is not stable: within runs of equal keys, put the ids back in ascending order.
        for (int i = 0; i < keys.Length;)
        {
            int j = i + 1;
            while (j < keys.Length && keys[j] == keys[i]) j++;
            if (j - i > 1) Array.Sort(order, i, j - i);
            i = j;
        }
        order.AsSpan(0, ids.Length).CopyTo(ids);
    }

    /// <summary>
    /// The ids of the k largest values, descending, ties to the lower id: one pass keeping the best k sorted, a value entering
    /// only when it beats the k-th (most of a vocabulary is rejected by that one comparison, O(V) rather than a sort's O(V log V)).
    /// </summary>
    private static void SelectLargest(ReadOnlySpan<float> row, Span<int> ids, Span<float> best)
    {
        int k = ids.Length, filled = 0;
        for (int j = 0; j < row.Length; j++)
        {
            float x = row[j];
            if (filled == k && !(x > best[k - 1])) continue;   // equal values keep the earlier (lower) id
            int at = filled < k ? filled++ : k - 1;
            while (at > 0 && x > best[at - 1])
            {
                best[at] = best[at - 1];
                ids[at] = ids[at - 1];
                at--;
            }
            best[at] = x;
            ids[at] = j;
        }
    }

    internal static double LogSumExp(ReadOnlySpan<float> row)
    {
        float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
        double s = 0;
        foreach (float x in row) s += Math.Exp(x - max);
        return max + Math.Log(s);
    }
}
