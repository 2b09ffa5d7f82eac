namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// The geometry of one forward call: B sequences of T tokens laid out row-major as B·T rows, the rope position of
/// each row, and the documents the rows form. A document is a run of rows that attend to each other (causally) and to
/// nothing else, and whose next-token and MTP targets stay inside it: pre-training has one document per sequence
/// (V3 packs documents into a sequence without masking), fine-tuning with <c>sample_packing</c> several, each
/// starting at position 0 (isolated packing).
/// </summary>
public sealed class SequenceBatch
{
    /// <param name="documentOffsets">flash-attention's cu_seqlens: ascending row offsets from 0 to B·T, one more than
    /// there are documents; every sequence start b·T is one of them (a document never spans two sequences).
    /// Null: one document per sequence.</param>
    public SequenceBatch(int batch, int seqLen, int[] positions, int[]? documentOffsets = null)
    {
        if (positions.Length != batch * seqLen) throw new ArgumentException($"{positions.Length} positions for {batch}×{seqLen} rows");
        Batch = batch;
        SeqLen = seqLen;
        Positions = positions;
        DocumentOffsets = documentOffsets ?? SequenceOffsets(batch, seqLen);
        Validate();
    }

    public int Batch { get; }

    public int SeqLen { get; }

    /// <summary>Rope position of each row [B·T].</summary>
    public int[] Positions { get; }

    /// <summary>cu_seqlens over the B·T rows (see the constructor).</summary>
    public int[] DocumentOffsets { get; }

    public int Tokens => Batch * SeqLen;

    public int Documents => DocumentOffsets.Length - 1;

    /// <summary>True when every sequence is one document (no isolation inside a sequence).</summary>
    public bool OneDocumentPerSequence => Documents == Batch;

    /// <summary>B sequences of T rows, one document each, positions 0..T−1.</summary>
    public static SequenceBatch Training(int batch, int seqLen)
    {
        var positions = new int[batch * seqLen];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seqLen; t++) positions[b * seqLen + t] = t;
        return new SequenceBatch(batch, seqLen, positions);
    }

    /// <summary>
    /// B sequences of T rows, each cut into documents of the given lengths (per sequence, summing to T; padding is a
    /// document of its own): positions restart at 0 for every document.
    /// </summary>
    public static SequenceBatch Packed(int seqLen, IReadOnlyList<IReadOnlyList<int>> documentLengths)
    {
        int batch = documentLengths.Count;
        var positions = new int[batch * seqLen];
        var offsets = new List<int> { 0 };
        int row = 0;
        for (int b = 0; b < batch; b++)
        {
            int used = 0;
            foreach (int length in documentLengths[b])
            {
                if (length <= 0) throw new ArgumentException($"sequence {b}: a document of {length} rows");
                for (int p = 0; p < length; p++) positions[row + p] = p;
                row += length;
                used += length;
                offsets.Add(row);
            }
            if (used != seqLen) throw new ArgumentException($"sequence {b}: documents of {used} rows in a sequence of {seqLen}");
        }
        return new SequenceBatch(batch, seqLen, positions, [.. offsets]);
    }

    /// <summary>For each row, the row offset one past the end of its document (formed once: the loss asks for it per MTP
    /// depth, for the targets and for the shifted tokens; read-only).</summary>
    public int[] DocumentEnds()
    {
        if (_documentEnds is not null) return _documentEnds;
        var ends = new int[Tokens];
        for (int d = 0; d < Documents; d++)
            ends.AsSpan(DocumentOffsets[d], DocumentOffsets[d + 1] - DocumentOffsets[d]).Fill(DocumentOffsets[d + 1]);
        return _documentEnds = ends;
    }

    private int[]? _documentEnds;

    private static int[] SequenceOffsets(int batch, int seqLen)
    {
        var offsets = new int[batch + 1];
        for (int b = 0; b <= batch; b++) offsets[b] = b * seqLen;
        return offsets;
    }

    private void Validate()
    {
        var o = DocumentOffsets;
        if (SeqLen == 0) return;
        if (o.Length < 1 || o[0] != 0 || o[^1] != Tokens)
            throw new ArgumentException($"document offsets must run from 0 to {Tokens}");
        int next = SeqLen;
        for (int d = 1; d < o.Length; d++)
        {
            if (o[d] <= o[d - 1]) throw new ArgumentException("document offsets must ascend strictly");
            if (o[d] > next) throw new ArgumentException($"a document spans the sequence boundary at row {next}");
            if (o[d] == next) next += SeqLen;
        }
    }
}
