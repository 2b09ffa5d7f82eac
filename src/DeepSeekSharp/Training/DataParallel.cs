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
    // The first _denseBuckets of _buckets are reduced over the world; the rest, one per local routed expert (in
    // model order), over the expert-data-parallel group.
    private readonly int _denseBuckets;
    private readonly List<ExpertUnit> _localExperts = [];
    private readonly ExpertParallel _experts;
    // Where the norm finds each expert's block squares: per routed expert in model order, its owner and the offset of
    // its blocks in the owner's local block list, and its blocks per shard (0: an expert without trained parameters).
    private readonly List<(int Owner, int Offset, int Blocks)> _expertBlocks = [];
    private readonly List<Parameter> _trainable;
    private readonly int _zeroStage;
    private readonly double[] _localBlocks, _allBlocks;
    private int _microBatchesAdded;

    /// <param name="world">the data-parallel group (every rank of the job)</param>
    /// <param name="parameters">the model's parameters; the trained ones (RequiresGrad) are reduced and updated</param>
    /// <param name="microBatchesPerRank">gradient_accumulation_steps: micro-batches each rank trains per step</param>
    /// <param name="zeroStage">0: every rank keeps all AdamW moments; 1: each keeps its shard's (ZeRO-1)</param>
    /// <param name="adamW">the optimizer's settings (its parameters are ignored: the buckets decide them)</param>
    /// <param name="experts">the routed experts and, with expert_parallel_size &gt; 1, the groups they are split over
    /// (<see cref="ExpertParallel.Create"/>, called before this)</param>
    public DataParallel(ICommunicator world, IReadOnlyList<(string Name, Parameter Parameter)> parameters, int microBatchesPerRank, int zeroStage, AdamW adamW,
        ExpertParallel experts)
    {
        if (zeroStage is not (0 or 1)) throw new DeepSeekSharpException($"zero_stage: {zeroStage} is not supported (0: no sharding, 1: AdamW state sharded over the ranks)");
        _world = world;
        _zeroStage = zeroStage;
        _experts = experts;
        MicroBatchesPerRank = microBatchesPerRank;
        var trained = parameters.Where(p => p.Parameter.RequiresGrad).ToList();
        _trainable = trained.Select(p => p.Parameter).ToList();
        // The buckets read and write the gradient arrays in place, so they exist from the start (a parameter no token
        // reaches still has its zero gradient, as AdamW would give it).
        foreach (var p in _trainable) p.Grad ??= new float[p.Length];
        int m = checked(microBatchesPerRank * world.Size);
        // Routed experts go in buckets of their own, one per expert, so the gradient norm's blocks (and the order they
        // are added in) are the same whichever rank holds an expert and however many hold it.
        var expertParameters = experts.Units.SelectMany(u => u.Members.Select(p => p.Parameter)).ToHashSet<Parameter>(ReferenceEqualityComparer.Instance);
        var dense = trained.Where(p => !expertParameters.Contains(p.Parameter)).ToList();
        for (int start = 0; start < dense.Count;)
        {
            int end = start;
            long elements = 0;
            do elements += dense[end++].Parameter.Length;
            while (end < dense.Count && elements + dense[end].Parameter.Length <= BucketElements);
            _buckets.Add(NewBucket(world, dense.GetRange(start, end - start), m));
            start = end;
        }
        _denseBuckets = _buckets.Count;
        var ownerBlocks = new int[experts.Size];
        foreach (var unit in experts.Units)
        {
            int blocks = unit.Members.Count == 0 ? 0
                : new ShardLayout(checked((int)unit.Members.Sum(p => p.Parameter.Length)), experts.ExpertData.Size, BlockSquares.Length).ShardLength / BlockSquares.Length;
            _expertBlocks.Add((unit.Owner, ownerBlocks[unit.Owner], blocks));
            ownerBlocks[unit.Owner] += blocks;
            if (blocks == 0 || !experts.IsLocal(unit)) continue;
            _localExperts.Add(unit);
            _buckets.Add(NewBucket(experts.ExpertData, [.. unit.Members], m));
        }
        int localBlocks = _buckets.Sum(b => b.Gradients.Shards.ShardLength / BlockSquares.Length);
        _localBlocks = new double[localBlocks];
        _allBlocks = new double[checked(localBlocks * world.Size)];
        IOptimizer inner = zeroStage == 1
            ? new ShardedAdamW(world, _buckets[.._denseBuckets], adamW.Moments) { Beta1 = adamW.Beta1, Beta2 = adamW.Beta2, Eps = adamW.Eps, WeightDecay = adamW.WeightDecay }
            : adamW;
        IOptimizer? expertOptimizer = zeroStage == 1 && _buckets.Count > _denseBuckets
            ? new ShardedAdamW(experts.ExpertData, _buckets[_denseBuckets..], adamW.Moments) { Beta1 = adamW.Beta1, Beta2 = adamW.Beta2, Eps = adamW.Eps, WeightDecay = adamW.WeightDecay }
            : null;
        Optimizer = new ExpertParallelOptimizer(expertOptimizer is null ? [inner] : [inner, expertOptimizer], experts, parameters);
    }

    private static ParameterBucket NewBucket(ICommunicator group, List<(string Name, Parameter Parameter)> members, int microBatches) =>
        new(members,
            new GradientBucket(group, members.Select(p => (Memory<float>)p.Parameter.Grad.AsMemory(0, (int)p.Parameter.Length)).ToList(), microBatches, BlockSquares.Length),
            new ShardedParameters(group, members.Select(p => p.Parameter.Data.AsMemory(0, (int)p.Parameter.Length)).ToList(), BlockSquares.Length));

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
          + (_zeroStage == 1 ? "ZeRO-1 (AdamW state sharded)" : "AdamW state replicated")
          + (_experts.Size > 1 ? $"; expert parallel over groups of {_experts.Size} rank(s), {_localExperts.Count} of {_expertBlocks.Count} routed experts trained here, expert gradients reduced over {_experts.ExpertData.Size} rank(s)" : "");

    /// <summary>
    /// Takes the gradient the last backward left in the parameters as this rank's next micro-batch (and zeroes them).
    /// Under expert parallelism each local expert takes one gradient per source rank of its group, each at the global
    /// index of that rank's micro-batch.
    /// </summary>
    public void AddMicroBatch()
    {
        int micro = _microBatchesAdded;
        _microBatchesAdded = (_microBatchesAdded + 1) % MicroBatchesPerRank;
        for (int b = 0; b < _buckets.Count; b++)
        {
            var gradients = _buckets[b].Gradients;
            if (b < _denseBuckets || _localExperts[b - _denseBuckets].SourceGradients is not { } sources) gradients.AddMicroBatch();
            else
                for (int s = 0; s < sources.Count; s++)
                    gradients.AddMicroBatch(checked((_experts.GroupIndex * _experts.Size + s) * MicroBatchesPerRank + micro), sources[s]);
        }
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
        foreach (var bucket in _buckets.Take(_denseBuckets))
        {
            int blocks = bucket.Gradients.Shards.ShardLength / BlockSquares.Length;
            for (int r = 0; r < _world.Size; r++)
                for (int k = 0; k < blocks; k++) squares += _allBlocks[r * _localBlocks.Length + bucketOffset + k];
            bucketOffset += blocks;
        }
        // Then every routed expert in model order, its shards in order over the expert-data-parallel ranks holding it
        // (world rank g·k + owner for the g-th), wherever it lives.
        int k0 = _experts.Size;
        foreach (var (owner, offset, blocks) in _expertBlocks)
            for (int g = 0; g < _experts.ExpertData.Size; g++)
            {
                int from = (g * k0 + owner) * _localBlocks.Length + bucketOffset + offset;
                for (int k = 0; k < blocks; k++) squares += _allBlocks[from + k];
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
