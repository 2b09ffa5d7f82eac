namespace DeepSeekSharp.Distributed;

/// <summary>
/// Several buffers (a bucket's parameter gradients, or the parameters themselves) seen as one flat vector, in list
/// order: element i of the flat view is element i − (lengths before) of the segment holding it.
/// </summary>
public sealed class FlatSegments
{
    private readonly Memory<float>[] _segments;
    private readonly int[] _starts;

    public FlatSegments(IReadOnlyList<Memory<float>> segments)
    {
        _segments = [.. segments];
        _starts = new int[_segments.Length + 1];
        for (int i = 0; i < _segments.Length; i++)
            _starts[i + 1] = checked(_starts[i] + _segments[i].Length);
    }

    /// <summary>Total floats over all segments.</summary>
    public int Length => _starts[^1];

    public int Count => _segments.Length;

    public Memory<float> this[int segment] => _segments[segment];

    /// <summary>The flat position of a segment's first element.</summary>
    public int StartOf(int segment) => _starts[segment];

    /// <summary>
    /// The pieces of the flat range [start, start + count), segment by segment: what an optimizer updating one ZeRO-1
    /// shard in place walks.
    /// </summary>
    public IEnumerable<(int Segment, int Offset, int Count, int FlatStart)> Pieces(int start, int count)
    {
        CheckRange(start, count);
        int end = start + count;
        for (int s = SegmentAt(start); s < _segments.Length && _starts[s] < end; s++)
        {
            int from = Math.Max(start, _starts[s]), to = Math.Min(end, _starts[s + 1]);
            if (to > from) yield return (s, from - _starts[s], to - from, from);
        }
    }

    /// <summary>Copies the flat range [start, start + destination.Length) out.</summary>
    public void CopyTo(int start, Span<float> destination)
    {
        CheckRange(start, destination.Length);
        int end = start + destination.Length;
        for (int s = SegmentAt(start); s < _segments.Length && _starts[s] < end; s++)
        {
            int from = Math.Max(start, _starts[s]), to = Math.Min(end, _starts[s + 1]);
            if (to > from) _segments[s].Span.Slice(from - _starts[s], to - from).CopyTo(destination.Slice(from - start));
        }
    }

    /// <summary>Copies <paramref name="source"/> into the flat range [start, start + source.Length).</summary>
    public void CopyFrom(ReadOnlySpan<float> source, int start)
    {
        CheckRange(start, source.Length);
        int end = start + source.Length;
        for (int s = SegmentAt(start); s < _segments.Length && _starts[s] < end; s++)
        {
            int from = Math.Max(start, _starts[s]), to = Math.Min(end, _starts[s + 1]);
            if (to > from) source.Slice(from - start, to - from).CopyTo(_segments[s].Span.Slice(from - _starts[s]));
        }
    }

    public void Clear()
    {
        foreach (var segment in _segments) segment.Span.Clear();
    }

    private int SegmentAt(int position)
    {
        int i = Array.BinarySearch(_starts, position);
        if (i < 0) return ~i - 1;
        while (i + 1 < _starts.Length && _starts[i + 1] == position) i++; // skip empty segments
        return Math.Min(i, Math.Max(0, _segments.Length - 1));
    }

    private void CheckRange(int start, int count)
    {
        if (start < 0 || count < 0 || (long)start + count > Length)
            throw new ArgumentOutOfRangeException(nameof(start), $"[{start}, +{count}) is outside the {Length} flat elements");
    }
}

/// <summary>
/// Padded equal shards of a flat vector over the ranks of a group (ZeRO-1): rank r owns [r·S, min((r+1)·S, Length))
/// with S = ⌈Length / Ranks⌉, and every shard travels and is stored S long (the last ones padded with zeros, a rank past
/// the end owning none), so collectives move equal blocks and no rank falls back to a different layout. With an
/// alignment a, S is rounded up to a multiple of a, so every shard starts on a multiple of a: fixed blocks of a
/// elements never straddle two ranks, whatever the rank count (the trainer's gradient norm sums such blocks).
/// </summary>
public readonly record struct ShardLayout
{
    public ShardLayout(int length, int ranks, int alignment = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfLessThan(ranks, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(alignment, 1);
        Length = length;
        Ranks = ranks;
        long perRank = ((long)length + ranks - 1) / ranks;
        ShardLength = checked((int)((perRank + alignment - 1) / alignment * alignment));
    }

    public int Length { get; }

    public int Ranks { get; }

    /// <summary>S: every shard's padded length.</summary>
    public int ShardLength { get; }

    /// <summary>S × Ranks.</summary>
    public long PaddedLength => (long)ShardLength * Ranks;

    /// <summary>First flat element of rank r's shard (may equal Length for a rank past the end).</summary>
    public int Start(int rank) => (int)Math.Min((long)rank * ShardLength, Length);

    /// <summary>Real (unpadded) elements in rank r's shard.</summary>
    public int Count(int rank) => (int)Math.Min((long)ShardLength, Length - (long)Start(rank));
}
