using DeepSeekSharp.Distributed;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Training;

/// <summary>
/// The trainer's data-parallel side (docs/parallelism.md §6): which global micro-batches this rank trains, the one
/// reduction point its gradients leave through, the global gradient norm, the optimizer (replicated AdamW, or ZeRO-1's
/// <see cref="ShardedAdamW"/>) and the small exact reductions of counts and per-micro-batch values. A single process
/// is the world of one and goes through the same code, so its bits are those of any rank count.
/// </summary>
/// <remarks>
/// Per step: <see cref="AddMicroBatch"/> after each backward (the gradient joins the fixed pairwise tree over the
/// step's M global micro-batches), then <see cref="ReduceAndClip"/>, then <see cref="Update"/>. The buckets are
/// started together after the last backward and finished in order, so a bucket's combining overlaps the later
/// buckets' transfers; the backward itself is not overlapped (it has no per-parameter hook yet).
/// </remarks>
public sealed class DataParallel : IDisposable
{
    // Floats per bucket: large enough that a collective's fixed cost is small, small enough that the first bucket's
    // combining overlaps the transfer of the next.
    private const int BucketElements = 1 << 22;

    private readonly ICommunicator _world;
    private readonly List<ParameterBucket> _buckets = [];
    private readonly List<Parameter> _trainable;
    private readonly int _zeroStage;
    private readonly double[] _localBlocks, _allBlocks;

    /// <param name="world">the data-parallel group (every rank of the job)</param>
    /// <param name="parameters">the model's parameters; the trained ones (RequiresGrad) are reduced and updated</param>
    /// <param name="microBatchesPerRank">gradient_accumulation_steps: micro-batches each rank trains per step</param>
    /// <param name="zeroStage">0: every rank keeps all AdamW moments; 1: each keeps its shard's (ZeRO-1)</param>
    /// <param name="adamW">the optimizer's settings (its parameters are ignored: the buckets decide them)</param>
    public DataParallel(ICommunicator world, IReadOnlyList<(string Name, Parameter Parameter)> parameters, int microBatchesPerRank, int zeroStage, AdamW adamW)
    {
        if (zeroStage is not (0 or 1)) throw new DeepSeekSharpException($"zero_stage: {zeroStage} is not supported (0: no sharding, 1: AdamW state sharded over the ranks)");
        _world = world;
        _zeroStage = zeroStage;
        MicroBatchesPerRank = microBatchesPerRank;
        var trained = parameters.Where(p => p.Parameter.RequiresGrad).ToList();
        _trainable = trained.Select(p => p.Parameter).ToList();
        // The buckets read and write the gradient arrays in place, so they exist from the start (a parameter no token
        // reaches still has its zero gradient, as AdamW would give it).
        foreach (var p in _trainable) p.Grad ??= new float[p.Length];
        int m = checked(microBatchesPerRank * world.Size);
        for (int start = 0; start < trained.Count;)
        {
            int end = start;
            long elements = 0;
            do elements += trained[end++].Parameter.Length;
            while (end < trained.Count && elements + trained[end].Parameter.Length <= BucketElements);
            var members = trained.GetRange(start, end - start);
            var gradients = new GradientBucket(world, members.Select(p => (Memory<float>)p.Parameter.Grad.AsMemory(0, (int)p.Parameter.Length)).ToList(), m, BlockSquares.Length);
            var values = new ShardedParameters(world, members.Select(p => p.Parameter.Data.AsMemory(0, (int)p.Parameter.Length)).ToList(), BlockSquares.Length);
            _buckets.Add(new ParameterBucket(members, gradients, values));
            start = end;
        }
        int localBlocks = _buckets.Sum(b => b.Gradients.Shards.ShardLength / BlockSquares.Length);
        _localBlocks = new double[localBlocks];
        _allBlocks = new double[checked(localBlocks * world.Size)];
        Optimizer = zeroStage == 1
            ? new ShardedAdamW(world, _buckets, adamW.Moments) { Beta1 = adamW.Beta1, Beta2 = adamW.Beta2, Eps = adamW.Eps, WeightDecay = adamW.WeightDecay }
            : adamW;
    }

    /// <summary>
    /// Bytes per rank for <paramref name="trainable"/> trained elements beyond the weights: the gradients, AdamW's
    /// moments (1/N of them under ZeRO-1), the pairwise tree's at most ⌈log₂ A⌉ + 1 partial sums and the bucket's
    /// send, receive and gather buffers (each about one gradient).
    /// </summary>
    public static long TrainingStateBytes(long trainable, MomentPrecision moments, int microBatchesPerRank, int ranks, int zeroStage)
    {
        long momentBytes = 2L * (moments == MomentPrecision.Bf16 ? 2 : 4);
        long momentElements = zeroStage == 1 ? (trainable + ranks - 1) / ranks : trainable;
        // The gradients, then the pairwise tree's partial sums and the exchange's send, receive and gather buffers; a
        // single process exchanges nothing, and with one micro-batch per step needs no tree either (GradientBucket).
        int treeBuffers = ranks == 1 && microBatchesPerRank == 1 ? 0 : (int)Math.Ceiling(Math.Log2(Math.Max(1, microBatchesPerRank))) + 1;
        long gradientCopies = 1 + treeBuffers + (ranks == 1 ? 0 : 3);
        return Math.Min(long.MaxValue / 2, trainable * sizeof(float) * gradientCopies) + Math.Min(long.MaxValue / 2, momentElements * momentBytes);
    }

    public int Rank => _world.Rank;

    public int Ranks => _world.Size;

    /// <summary>Only rank 0 prints, logs and writes files.</summary>
    public bool IsRoot => _world.Rank == 0;

    public int MicroBatchesPerRank { get; }

    /// <summary>M: micro-batches per optimizer step over all ranks (the global batch).</summary>
    public int MicroBatchesPerStep => MicroBatchesPerRank * _world.Size;

    /// <summary>The global index of this rank's <paramref name="micro"/>-th micro-batch of <paramref name="step"/> (0-based):
    /// a single process with the whole accumulation takes the same index at the same place.</summary>
    public long GlobalMicroBatch(long step, int micro) => step * MicroBatchesPerStep + MicroBatchInStep(micro);

    /// <summary>The index of this rank's <paramref name="micro"/>-th micro-batch within the step's global batch.</summary>
    public int MicroBatchInStep(int micro) => _world.Rank * MicroBatchesPerRank + micro;

    public IOptimizer Optimizer { get; }

    public string Summary => _world.Size == 1 && _zeroStage == 0 ? "single process"
        : $"data parallel over {_world.Size} rank(s) ({_world.Description}), {MicroBatchesPerStep} micro-batches per step, {_buckets.Count} gradient bucket(s), "
          + (_zeroStage == 1 ? "ZeRO-1 (AdamW state sharded)" : "AdamW state replicated");

    /// <summary>Takes the gradient the last backward left in the parameters as this rank's next micro-batch (and zeroes them).</summary>
    public void AddMicroBatch()
    {
        foreach (var bucket in _buckets) bucket.Gradients.AddMicroBatch();
    }

    /// <summary>
    /// Sums the step's gradients over every micro-batch of every rank, computes the global L2 norm from the reduced
    /// gradient (the same bits on every rank and for any rank count), and scales the gradient so the norm is at most
    /// <paramref name="maxNorm"/> (0: no clipping), as <see cref="GradClip"/> does. Returns the norm before clipping.
    /// Afterwards the parameters' gradients hold the sum (ZeRO-1: only this rank's shards do, in the buckets).
    /// </summary>
    public float ReduceAndClip(float maxNorm)
    {
        foreach (var bucket in _buckets) bucket.Gradients.StartReduction();
        int at = 0;
        foreach (var bucket in _buckets)
        {
            if (_zeroStage == 0) bucket.Gradients.WaitAll();
            int blocks = bucket.Gradients.Shards.ShardLength / BlockSquares.Length;
            bucket.Gradients.ShardBlockSquares(_localBlocks.AsSpan(at, blocks));
            at += blocks;
        }
        _world.AllGather<double>(_localBlocks, _allBlocks);
        // Bucket by bucket, rank by rank, block by block: the blocks in the order of the flat vector; a shard's padding
        // blocks (all after the real ones) are +0.0 and change no bit of the sum.
        double squares = 0;
        int bucketOffset = 0;
        foreach (var bucket in _buckets)
        {
            int blocks = bucket.Gradients.Shards.ShardLength / BlockSquares.Length;
            for (int r = 0; r < _world.Size; r++)
                for (int k = 0; k < blocks; k++) squares += _allBlocks[r * _localBlocks.Length + bucketOffset + k];
            bucketOffset += blocks;
        }
        float norm = (float)Math.Sqrt(squares);
        if (maxNorm > 0 && norm > maxNorm && float.IsFinite(norm))
        {
            float scale = maxNorm / (norm + 1e-6f);
            if (_zeroStage == 1)
                foreach (var bucket in _buckets) TensorPrimitives.Multiply(bucket.Gradients.WaitShard(), scale, bucket.Gradients.WaitShard());
            else
                foreach (var p in _trainable) TensorPrimitives.Multiply(p.Grad.AsSpan(0, (int)p.Length), scale, p.Grad.AsSpan(0, (int)p.Length));
        }
        return norm;
    }

    /// <summary>One optimizer step; with ZeRO-1 every rank then receives the others' updated shards.</summary>
    public void Update(float learningRate)
    {
        Optimizer.Update(learningRate);
        if (_zeroStage == 1)
            foreach (var bucket in _buckets) bucket.Values.AllGather();
    }

    /// <summary>Sums integer counts over the ranks in place (exact: no rounding, any order).</summary>
    public void SumCounts(long[] counts)
    {
        if (_world.Size > 1) _world.AllReduce<long>(counts, ReduceOp.Sum);
    }

    /// <summary>
    /// Sums per-micro-batch values over every rank's micro-batches in global micro-batch order (each column left to
    /// right, as one process adds them as they come): <paramref name="local"/> holds <paramref name="width"/> values for
    /// each of this rank's micro-batches; the result, one sum per column, is the same on every rank and for any N.
    /// </summary>
    public double[] SumInGlobalOrder(double[] local, int width)
    {
        if (local.Length != MicroBatchesPerRank * width) throw new ArgumentException($"{local.Length} values, expected {MicroBatchesPerRank} × {width}");
        var all = local;
        if (_world.Size > 1)
        {
            all = new double[local.Length * _world.Size];
            _world.AllGather<double>(local, all);
        }
        var sums = new double[width];
        for (int g = 0; g < all.Length; g += width)
            for (int k = 0; k < width; k++) sums[k] += all[g + k];
        return sums;
    }

    /// <summary>True on every rank when any rank passes true (a stop request seen by one rank stops all at the same step).</summary>
    public bool Any(bool local)
    {
        if (_world.Size == 1) return local;
        var flag = new[] { local ? 1 : 0 };
        _world.AllReduce<int>(flag, ReduceOp.Max);
        return flag[0] != 0;
    }

    public void Barrier() => _world.Barrier();

    public void Dispose()
    {
        foreach (var bucket in _buckets) bucket.Gradients.Dispose();
    }
}
