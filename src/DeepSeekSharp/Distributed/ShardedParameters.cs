namespace DeepSeekSharp.Distributed;

/// <summary>
/// ZeRO-1's other half: each rank of the data-parallel group updates only its shard of the parameters (the one whose
/// optimizer state it keeps, <see cref="Shards"/>), in place, then <see cref="AllGather"/> copies every rank's updated
/// shard into everyone's parameters. An element is updated by exactly one rank from the same inputs a single process
/// would use, so the parameters stay bit-identical to a one-process run.
/// </summary>
public sealed class ShardedParameters
{
    private readonly ICommunicator _group;
    private readonly float[] _own, _gathered;

    /// <param name="group">the data-parallel group</param>
    /// <param name="parameters">the parameters' values, in the same order as the gradients of the matching <see cref="GradientBucket"/></param>
    /// <param name="shardAlignment">as the matching bucket's, so both cut the same shards</param>
    public ShardedParameters(ICommunicator group, IReadOnlyList<Memory<float>> parameters, int shardAlignment = 1)
    {
        _group = group;
        Parameters = new FlatSegments(parameters);
        Shards = new ShardLayout(Parameters.Length, group.Size, shardAlignment);
        _own = new float[Shards.ShardLength];
        _gathered = new float[checked((int)Shards.PaddedLength)];
    }

    public FlatSegments Parameters { get; }

    public ShardLayout Shards { get; }

    /// <summary>This rank's flat range: the elements it updates.</summary>
    public (int Start, int Count) OwnShard => (Shards.Start(_group.Rank), Shards.Count(_group.Rank));

    /// <summary>The pieces of this rank's shard, parameter by parameter (segment index, offset in it, count, flat start).</summary>
    public IEnumerable<(int Segment, int Offset, int Count, int FlatStart)> OwnPieces() => Parameters.Pieces(OwnShard.Start, OwnShard.Count);

    /// <summary>Sends this rank's (updated) shard to every rank and receives theirs: afterwards all ranks hold the same parameters.</summary>
    public void AllGather()
    {
        var (start, count) = OwnShard;
        Parameters.CopyTo(start, _own.AsSpan(0, count));
        _own.AsSpan(count).Clear();
        _group.AllGather<float>(_own, _gathered);
        Parameters.CopyFrom(_gathered.AsSpan(0, Parameters.Length), 0);
    }
}
