using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.FineTuning;

/// <summary>
/// Micro-batches of fine-tuning examples (training.md, fine-tuning). Each epoch visits the training examples in a fresh
/// seeded order. Without packing a row is one example, padded to the longest example of its micro-batch. With
/// <c>sample_packing</c> the epoch's examples are bin-packed into rows of <c>sequence_len</c> (first-fit decreasing, so
/// every epoch has the same number of rows, then the rows are shuffled): each example is a document of its own, its
/// positions restarting at 0, attending only within itself, its MTP targets not crossing its end. The tail of a row
/// (and the padding of an unpacked row) is one padding document without loss. Micro-batch i is rows B·i … B·i+B−1 of
/// the endless sequence of epochs, a pure function of (examples, seed, i).
/// </summary>
public sealed class SftBatches : ITrainingBatches
{
    private readonly IReadOnlyList<TokenizedExample> _train;
    private readonly int _seqLen, _microBatch, _seed, _padId;
    private readonly bool _packing;
    private readonly int _rowsPerEpoch;
    private readonly List<TrainingBatch> _validation = [];
    private long _epoch = -1;
    private List<int[]> _rows = [];

    /// <param name="train">training examples, each at most <paramref name="seqLen"/> tokens</param>
    /// <param name="validation">examples of the evaluation set, batched the same way in their order</param>
    /// <param name="padId">the id written into padding (any id: padding is its own document and carries no loss)</param>
    /// <param name="tokenizer">turns trained tokens back into text, for bits per byte</param>
    public SftBatches(IReadOnlyList<TokenizedExample> train, IReadOnlyList<TokenizedExample> validation, int seqLen, int microBatch,
        bool packing, int seed, int padId, Tokenization.ITextTokenizer tokenizer)
    {
        if (train.Count == 0) throw new DeepSeekSharpException("no fine-tuning examples to train on");
        foreach (var e in train.Concat(validation))
            if (e.InputIds.Length > seqLen || e.InputIds.Length == 0)
                throw new ArgumentException($"an example of {e.InputIds.Length} tokens does not fit sequence_len {seqLen}");
        (_train, _seqLen, _microBatch, _packing, _seed, _padId) = (train, seqLen, microBatch, packing, seed, padId);
        _rowsPerEpoch = packing ? Pack(Enumerable.Range(0, train.Count).ToArray(), train, seqLen).Count : train.Count;
        var validationRows = packing ? Pack(Enumerable.Range(0, validation.Count).ToArray(), validation, seqLen)
            : Enumerable.Range(0, validation.Count).Select(i => new[] { i }).ToList();
        for (int r = 0; r < validationRows.Count; r += microBatch)
            _validation.Add(Assemble(validationRows.Skip(r).Take(microBatch).ToList(), validation));
        TrainTokens = train.Sum(e => (long)e.InputIds.Length);
        TrainedTokens = train.Sum(e => (long)e.TrainedTokens);
        ValidationBytesPerToken = BytesPerTrainedToken(validation, tokenizer);
    }

    /// <summary>Rows (packed sequences or single examples) in one epoch.</summary>
    public int RowsPerEpoch => _rowsPerEpoch;

    public long TrainTokens { get; }

    public long TrainedTokens { get; }

    /// <summary>With packing, the share of the computed rows filled by example tokens (the rest is padding).</summary>
    public double PackingEfficiency => _packing ? (double)TrainTokens / ((long)_rowsPerEpoch * _seqLen) : double.NaN;

    public int ValidationBatches => _validation.Count;

    public double ValidationBytesPerToken { get; }

    public string Summary => _packing
        ? $"fine-tuning on {_train.Count:N0} examples ({TrainTokens:N0} tokens, {TrainedTokens:N0} trained) packed into {_rowsPerEpoch:N0} rows of {_seqLen} per epoch ({PackingEfficiency:P1} of the rows are example tokens)"
        : $"fine-tuning on {_train.Count:N0} examples ({TrainTokens:N0} tokens, {TrainedTokens:N0} trained), one per row, padded to the longest of each micro-batch";

    public TrainingBatch Validation(int index) => _validation[index];

    public TrainingBatch Train(long index)
    {
        var rows = new List<int[]>(_microBatch);
        for (int b = 0; b < _microBatch; b++)
        {
            long global = index * _microBatch + b;
            long epoch = global / _rowsPerEpoch;
            if (epoch != _epoch) BuildEpoch(epoch);
            rows.Add(_rows[(int)(global % _rowsPerEpoch)]);
        }
        return Assemble(rows, _train);
    }

    private void BuildEpoch(long epoch)
    {
        var order = Enumerable.Range(0, _train.Count).ToArray();
        // Random(int) is the same in every process (HashCode is not): a resume needs the same order.
        var rng = new Random(unchecked(_seed * 1_000_003 + (int)epoch));
        rng.Shuffle(order);
        if (_packing)
        {
            _rows = Pack(order, _train, _seqLen);
            var shuffled = _rows.ToArray();
            rng.Shuffle(shuffled);
            _rows = [.. shuffled];
        }
        else _rows = order.Select(i => new[] { i }).ToList();
        _epoch = epoch;
    }

    /// <summary>
    /// First-fit decreasing: examples by length (longest first; ties keep <paramref name="order"/>), each into the first
    /// row with room. The row count depends only on the lengths, so it is the same in every epoch.
    /// </summary>
    internal static List<int[]> Pack(int[] order, IReadOnlyList<TokenizedExample> examples, int capacity)
    {
        var sorted = order.Select((example, rank) => (example, rank)).OrderByDescending(x => examples[x.example].InputIds.Length)
            .ThenBy(x => x.rank).Select(x => x.example);
        var rows = new List<List<int>>();
        var free = new List<int>();
        foreach (int e in sorted)
        {
            int length = examples[e].InputIds.Length, row = -1;
            for (int r = 0; r < rows.Count; r++)
                if (free[r] >= length) { row = r; break; }
            if (row < 0)
            {
                rows.Add([]);
                free.Add(capacity);
                row = rows.Count - 1;
            }
            rows[row].Add(e);
            free[row] -= length;
        }
        return rows.Select(r => r.ToArray()).ToList();
    }

    /// <summary>
    /// Lays rows of examples out as one micro-batch: packed rows are <c>sequence_len</c> long, unpacked ones as long as
    /// the longest example among them; what a row leaves free is one padding document.
    /// </summary>
    private TrainingBatch Assemble(IReadOnlyList<int[]> rows, IReadOnlyList<TokenizedExample> examples)
    {
        int t = _packing ? _seqLen : rows.Max(r => r.Sum(e => examples[e].InputIds.Length));
        var tokens = new int[rows.Count * t];
        var labels = new int[rows.Count * t];
        var documents = new List<IReadOnlyList<int>>(rows.Count);
        for (int b = 0; b < rows.Count; b++)
        {
            int at = b * t;
            var lengths = new List<int>();
            foreach (int e in rows[b])
            {
                var ex = examples[e];
                ex.InputIds.CopyTo(tokens, at);
                ex.Labels.CopyTo(labels, at);
                at += ex.InputIds.Length;
                lengths.Add(ex.InputIds.Length);
            }
            int padding = (b + 1) * t - at;
            if (padding > 0)
            {
                tokens.AsSpan(at, padding).Fill(_padId);
                labels.AsSpan(at, padding).Fill(TokenizedExample.IgnoreIndex);
                lengths.Add(padding);
            }
            documents.Add(lengths);
        }
        return new TrainingBatch(tokens, labels, SequenceBatch.Packed(t, documents));
    }

    /// <summary>UTF-8 bytes of the trained targets' text per trained target (as `dss eval` counts them: special tokens
    /// count none), 1 when there is nothing to measure.</summary>
    private static double BytesPerTrainedToken(IReadOnlyList<TokenizedExample> examples, Tokenization.ITextTokenizer tokenizer)
    {
        long bytes = 0, count = 0;
        foreach (var e in examples)
        {
            bytes += Evaluation.MaskedLossEvaluator.TargetBytes(tokenizer, e.Labels);
            count += e.Labels.Skip(1).Count(l => l != TokenizedExample.IgnoreIndex);
        }
        return count == 0 || bytes == 0 ? 1 : (double)bytes / count;
    }
}
