namespace DeepSeekSharp.Distributed;

/// <summary>
/// A bucket of parameter gradients that leaves through the data-parallel group's one reduction point, summed in
/// <see cref="PairwiseSumTree"/> order over the step's M global micro-batches: the result is bit-identical whether 1,
/// 2, 4 (or any N dividing M) processes hold them. Rank r holds micro-batches [r·M/N, (r+1)·M/N).
/// </summary>
/// <remarks>
/// The reduction is a reduce-scatter and an allgather built from data movement only, so no MPI reduction order ever
/// decides the bits: an all-to-all-v sends each rank's partial sums (<see cref="TreeAccumulator.Nodes"/>) of shard d
/// to rank d, which adds everyone's pieces as the tree says (<see cref="PairwiseSumTree.CombineCover"/>); an allgather
/// then copies the finished shards everywhere (<see cref="WaitAll"/>), or each rank keeps only its own
/// (<see cref="WaitShard"/>, ZeRO-1). <see cref="StartReduction"/> returns at once, so a trainer starts a bucket as soon
/// as the backward has produced its gradients and computes on while it travels. Per step: <see cref="AddMicroBatch()"/>
/// after each of this rank's backward passes, then <see cref="StartReduction"/>, then one of the waits. All buffers
/// are allocated here, once.
/// A group of one (a single process) has nothing to send: it keeps no send, receive or gather buffers, and with one
/// micro-batch per step no tree either, since that micro-batch's gradient already is the sum. The bits are the same
/// (the exchange only moves data), and a single process pays for its gradients once instead of about five times.
/// </remarks>
public sealed class GradientBucket : IDisposable
{
    private readonly ICommunicator _group;
    private readonly PairwiseSumTree _tree;
    private readonly TreeAccumulator _accumulator;
    private readonly List<(int Start, int End)> _allNodes = [];
    private readonly float[] _send, _gathered;
    private float[] _receive;
    // A single process: no exchange; with one micro-batch per step the parameters' gradients are the sum as they are.
    private readonly bool _alone, _direct;
    private bool _directAdded, _shardCopied;
    private readonly int[] _sendCounts, _sendOffsets, _receiveCounts, _receiveOffsets;
    private readonly CollectiveRequest _request = new();
    private bool _inFlight, _shardReady;

    /// <param name="group">the data-parallel group the bucket is summed over</param>
    /// <param name="gradients">the parameter gradients of the bucket (the reduced sum is written back into them)</param>
    /// <param name="microBatches">M, the micro-batches of one optimizer step over the whole group (a multiple of its size)</param>
    /// <param name="shardAlignment">shards start on multiples of this many elements (<see cref="ShardLayout"/>)</param>
    public GradientBucket(ICommunicator group, IReadOnlyList<Memory<float>> gradients, int microBatches, int shardAlignment = 1)
    {
        int n = group.Size;
        if (microBatches < n || microBatches % n != 0)
            throw new DeepSeekSharpException($"{microBatches} micro-batches per step cannot be split evenly over {n} data-parallel ranks: make the global micro-batch count a multiple of the rank count");
        _group = group;
        _tree = new PairwiseSumTree(microBatches);
        Gradients = new FlatSegments(gradients);
        Shards = new ShardLayout(Gradients.Length, n, shardAlignment);
        int perRank = microBatches / n;
        MicroBatches = (group.Rank * perRank, perRank);
        _accumulator = new TreeAccumulator(_tree, MicroBatches.First, perRank, Gradients.Length);
        _alone = n == 1;
        _direct = _alone && microBatches == 1;

        int s = Shards.ShardLength, mine = _accumulator.Nodes.Count;
        _sendCounts = new int[n];
        _sendOffsets = new int[n];
        _receiveCounts = new int[n];
        _receiveOffsets = new int[n];
        int received = 0;
        for (int r = 0; r < n; r++)
        {
            var nodes = _tree.Cover(r * perRank, (r + 1) * perRank);
            _allNodes.AddRange(nodes);
            _sendCounts[r] = checked(mine * s);
            _sendOffsets[r] = checked(r * mine * s);
            _receiveCounts[r] = checked(nodes.Count * s);
            _receiveOffsets[r] = received;
            received = checked(received + nodes.Count * s);
        }
        // Alone, the shard is the whole vector: a copy of it is made only if someone asks for it (WaitShard: ZeRO-1).
        _send = _alone ? [] : new float[checked(n * mine * s)];
        _receive = _alone ? [] : new float[received];
        _gathered = _alone ? [] : new float[checked(n * s)];
    }

    /// <summary>The bucket's gradients as one flat vector.</summary>
    public FlatSegments Gradients { get; }

    /// <summary>Which flat elements each rank owns after <see cref="WaitShard"/> (and whose optimizer state it keeps under ZeRO-1).</summary>
    public ShardLayout Shards { get; }

    /// <summary>This rank's micro-batches: global index of the first, and how many.</summary>
    public (int First, int Count) MicroBatches { get; }

    /// <summary>How many partial sums this rank sends (1 when the world size is a power of two dividing M).</summary>
    public int PartialSums => _accumulator.Nodes.Count;

    /// <summary>
    /// Takes the gradient now in the bucket's buffers as this rank's next micro-batch and clears the buffers, so the
    /// next backward accumulates into zeros.
    /// </summary>
    public void AddMicroBatch()
    {
        if (_inFlight) throw new InvalidOperationException("the bucket is being reduced: wait for it before adding the next step's micro-batches");
        if (_shardReady) Reset();
        if (_direct)
        {
            if (_directAdded) throw new InvalidOperationException("all 1 micro-batches of this rank were already added; Reset for the next step");
            _directAdded = true;   // the gradient stays where the backward left it (the trainer zeroes it before the next step)
            return;
        }
        Gradients.CopyTo(0, _accumulator.BeginLeaf());
        _accumulator.CommitLeaf();
        Gradients.Clear();
    }

    /// <summary>
    /// Takes the gradient held in <paramref name="gradients"/> (laid out as <see cref="Gradients"/>) as global
    /// micro-batch <paramref name="microBatch"/> of this rank's range, in any order, and clears it: an expert-parallel
    /// rank receives the rows of several source ranks' micro-batches at once and forms each one's expert gradient apart.
    /// </summary>
    public void AddMicroBatch(int microBatch, FlatSegments gradients)
    {
        if (_inFlight) throw new InvalidOperationException("the bucket is being reduced: wait for it before adding the next step's micro-batches");
        if (gradients.Length != Gradients.Length) throw new ArgumentException($"a gradient of {gradients.Length} floats, expected {Gradients.Length}");
        if (_shardReady) Reset();
        gradients.CopyTo(0, _accumulator.BeginLeaf());
        _accumulator.CommitLeaf(microBatch);
        gradients.Clear();
    }

    /// <summary>Sends this rank's partial sums toward the shard owners without waiting (after its last micro-batch).</summary>
    public void StartReduction()
    {
        if (_direct ? !_directAdded : !_accumulator.IsComplete)
            throw new InvalidOperationException($"{_accumulator.Added} of this rank's {MicroBatches.Count} micro-batches were added: add them all before reducing");
        if (_inFlight || _shardReady) throw new InvalidOperationException("this step's micro-batches were already reduced: add the next step's first");
        if (_alone)
        {
            // Nothing travels: the tree's root is this process's sum. Written back now, so WaitAll has nothing to do.
            if (!_direct) Gradients.CopyFrom(_accumulator.Root(0), 0);
            _inFlight = true;
            return;
        }
        int s = Shards.ShardLength, mine = PartialSums;
        for (int d = 0; d < _group.Size; d++)
        {
            int start = Shards.Start(d), count = Shards.Count(d);
            for (int j = 0; j < mine; j++)
            {
                Span<float> block = _send.AsSpan((d * mine + j) * s, s);
                _accumulator.Root(j).Slice(start, count).CopyTo(block);
                block[count..].Clear();
            }
        }
        _group.StartAllToAllV<float>(_send, _sendCounts, _sendOffsets, _receive, _receiveCounts, _receiveOffsets, _request);
        _inFlight = true;
    }

    /// <summary>True once the partial sums have arrived (drives MPI's progress; never blocks).</summary>
    public bool IsArrived => !_inFlight || _alone || _request.Test();

    /// <summary>
    /// Waits for the partial sums and finishes the tree for this rank's shard: returns the summed gradient of
    /// [Shards.Start(rank), +Shards.Count(rank)), padded to Shards.ShardLength with zeros. Valid until the next step's
    /// first <see cref="AddMicroBatch()"/>; the caller may scale it in place (gradient clipping) before the optimizer reads it.
    /// </summary>
    public Span<float> WaitShard()
    {
        if (_alone)
        {
            // The sum is in the gradients (StartReduction); the shard is a padded copy of it, made once per step so
            // that scaling it in place (clipping) holds until the optimizer reads it.
            if (!_inFlight && !_shardReady) throw new InvalidOperationException("StartReduction first");
            if (!_shardCopied)
            {
                if (_receive.Length == 0) _receive = new float[Shards.ShardLength];
                Gradients.CopyTo(0, _receive.AsSpan(0, Gradients.Length));
                _shardCopied = true;
            }
            (_inFlight, _shardReady) = (false, true);
            return _receive.AsSpan(0, Shards.ShardLength);
        }
        if (!_shardReady)
        {
            if (!_inFlight) throw new InvalidOperationException("StartReduction first");
            _request.Wait();
            _inFlight = false;
            _tree.CombineCover(_allNodes, _receive, Shards.ShardLength);
            _shardReady = true;
        }
        return _receive.AsSpan(0, Shards.ShardLength);
    }

    /// <summary>Waits, then gathers every rank's shard: the bucket's buffers hold the whole sum (data parallelism without ZeRO).</summary>
    public void WaitAll()
    {
        if (_alone)
        {
            if (!_shardReady && !_inFlight) throw new InvalidOperationException("StartReduction first");
            (_inFlight, _shardReady) = (false, true);   // StartReduction already left the sum in the gradients
            return;
        }
        ReadOnlySpan<float> shard = WaitShard();
        _group.AllGather(shard, _gathered.AsSpan());
        Gradients.CopyFrom(_gathered.AsSpan(0, Gradients.Length), 0);
    }

    /// <summary>
    /// Σg² of each <see cref="BlockSquares.Length"/>-element block of this rank's reduced shard (padding included), for
    /// the global gradient norm; after <see cref="WaitAll"/> or <see cref="WaitShard"/>. A single process reads the
    /// blocks from the gradients themselves, one block at a time, instead of keeping a contiguous copy.
    /// </summary>
    public void ShardBlockSquares(Span<double> destination)
    {
        // Exchanged, a copied shard, or (ZeRO-1, no WaitAll) the shard the optimizer will read anyway.
        if (!_alone || _shardCopied || !_shardReady)
        {
            BlockSquares.Compute(WaitShard(), destination);
            return;
        }
        Span<float> block = stackalloc float[BlockSquares.Length];
        for (int b = 0; b < destination.Length; b++)
        {
            int start = b * BlockSquares.Length, count = Math.Max(0, Math.Min(BlockSquares.Length, Gradients.Length - start));
            block.Clear();
            if (count > 0) Gradients.CopyTo(start, block[..count]);
            BlockSquares.Compute(block, destination.Slice(b, 1));
        }
    }

    private void Reset()
    {
        _accumulator.Reset();
        _directAdded = false;
        _shardCopied = false;
        _shardReady = false;
    }

    public void Dispose() => _request.Dispose();
}
