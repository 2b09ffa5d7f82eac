using DeepSeekSharp.Optim;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// Parameters that travel together through the data-parallel reduction: their names, the bucket their gradients
/// are summed in and the flat view of their values that ZeRO-1 updates shard by shard (same order, same shards).
/// </summary>
public sealed record ParameterBucket(IReadOnlyList<(string Name, Parameter Parameter)> Members, GradientBucket Gradients, ShardedParameters Values);

/// <summary>
/// ZeRO-1 AdamW: each rank keeps the two moments of its own padded shard of every bucket only (1/N of the state) and
/// updates only those elements, from the reduced gradient shard <see cref="GradientBucket.WaitShard"/> left it; the
/// caller then allgathers the parameters (<see cref="ShardedParameters.AllGather"/>). Every element goes through
/// <see cref="AdamW"/>'s own kernel with the same step count, bias corrections and decay, so the bits equal a
/// whole-model AdamW on one process. Checkpoints hold whole-parameter moments (<see cref="State"/> gathers them), the
/// same file a single process writes, so a run resumes on any number of ranks.
/// </summary>
public sealed class ShardedAdamW : IOptimizer
{
    private const int Chunk = 4096;
    private readonly ICommunicator _group;
    private readonly IReadOnlyList<ParameterBucket> _buckets;
    // Per bucket: the moments of this rank's padded shard (fp32, or BF16 bits).
    private readonly float[][]? _m32, _v32;
    private readonly ushort[][]? _m16, _v16;
    private readonly float[] _scratch = new float[2 * Chunk];

    public ShardedAdamW(ICommunicator group, IReadOnlyList<ParameterBucket> buckets, MomentPrecision moments)
    {
        _group = group;
        _buckets = buckets;
        Moments = moments;
        var lengths = buckets.Select(b => b.Values.Shards.ShardLength).ToArray();
        foreach (var b in buckets)
            if (b.Values.Shards != b.Gradients.Shards)
                throw new ArgumentException("a bucket's parameter shards must be its gradient shards", nameof(buckets));
        if (moments == MomentPrecision.Bf16) (_m16, _v16) = (lengths.Select(n => new ushort[n]).ToArray(), lengths.Select(n => new ushort[n]).ToArray());
        else (_m32, _v32) = (lengths.Select(n => new float[n]).ToArray(), lengths.Select(n => new float[n]).ToArray());
    }

    public float Beta1 { get; init; } = 0.9f;
    public float Beta2 { get; init; } = 0.95f;
    public float Eps { get; init; } = 1e-8f;
    public float WeightDecay { get; init; } = 0.1f;
    public MomentPrecision Moments { get; }

    public long Step { get; private set; }

    /// <summary>Bytes this rank's moments take (its padded shards only).</summary>
    public long StateBytes => _buckets.Sum(b => (long)b.Values.Shards.ShardLength) * (Moments == MomentPrecision.Bf16 ? 4 : 8);

    public void Update(float learningRate)
    {
        Step++;
        // The same expressions as AdamW.Update, so the bias corrections and the decay factor have the same bits.
        float bc1 = 1f - MathF.Pow(Beta1, Step), bc2 = 1f - MathF.Pow(Beta2, Step);
        float decay = 1f - learningRate * WeightDecay;
        for (int b = 0; b < _buckets.Count; b++)
        {
            var bucket = _buckets[b];
            Span<float> gradient = bucket.Gradients.WaitShard();
            int ownStart = bucket.Values.OwnShard.Start;
            foreach (var (segment, offset, count, flatStart) in bucket.Values.OwnPieces())
            {
                var p = bucket.Members[segment].Parameter;
                float pieceDecay = p.WeightDecay && WeightDecay > 0 ? decay : 1f;
                for (int c = 0; c < count; c += Chunk)
                {
                    int len = Math.Min(Chunk, count - c), at = flatStart - ownStart + c;
                    Span<float> m = _m32 is not null ? _m32[b].AsSpan(at, len) : _scratch.AsSpan(0, len);
                    Span<float> v = _v32 is not null ? _v32[b].AsSpan(at, len) : _scratch.AsSpan(Chunk, len);
                    if (_m16 is not null)
                    {
                        NumericFormats.Bf16ToFloat(_m16[b].AsSpan(at, len), m);
                        NumericFormats.Bf16ToFloat(_v16![b].AsSpan(at, len), v);
                    }
                    AdamW.StepChunk(Beta1, Beta2, Eps, gradient.Slice(at, len), m, v, bucket.Values.Parameters[segment].Span.Slice(offset + c, len),
                        learningRate, bc1, bc2, pieceDecay);
                    if (_m16 is not null)
                    {
                        NumericFormats.FloatToBf16(m, _m16[b].AsSpan(at, len));
                        NumericFormats.FloatToBf16(v, _v16![b].AsSpan(at, len));
                    }
                }
            }
        }
    }

    /// <summary>Whole-parameter moments, gathered from every rank's shard: every rank of the group must call it together.</summary>
    public IEnumerable<(string Name, float[] M, float[] V)> State()
    {
        var result = new List<(string, float[], float[])>();
        if (Step == 0) return result; // nothing was updated yet, as AdamW holds no state before its first step
        for (int b = 0; b < _buckets.Count; b++)
        {
            var bucket = _buckets[b];
            float[] m = Gather(_m32?[b], _m16?[b], bucket.Values.Shards), v = Gather(_v32?[b], _v16?[b], bucket.Values.Shards);
            for (int i = 0; i < bucket.Members.Count; i++)
            {
                int start = bucket.Values.Parameters.StartOf(i), length = bucket.Values.Parameters[i].Length;
                result.Add((bucket.Members[i].Name, m.AsSpan(start, length).ToArray(), v.AsSpan(start, length).ToArray()));
            }
        }
        return result;
    }

    private float[] Gather(float[]? own32, ushort[]? own16, ShardLayout shards)
    {
        var own = own32 ?? new float[shards.ShardLength];
        if (own16 is not null) NumericFormats.Bf16ToFloat(own16, own);
        var all = new float[shards.PaddedLength];
        _group.AllGather<float>(own, all);
        return all;
    }

    /// <summary>Takes this rank's shard of whole-parameter moments (a checkpoint written by any number of ranks).</summary>
    public void LoadState(long step, IReadOnlyDictionary<string, (float[] M, float[] V)> moments)
    {
        if (step > 0)
            foreach (var (name, _) in _buckets.SelectMany(b => b.Members))
                if (!moments.ContainsKey(name)) throw new DeepSeekSharpException($"optimizer state for '{name}' is missing");
        Step = step;
        for (int b = 0; b < _buckets.Count; b++)
        {
            var bucket = _buckets[b];
            int ownStart = bucket.Values.OwnShard.Start;
            foreach (var (segment, offset, count, flatStart) in bucket.Values.OwnPieces())
            {
                var (name, p) = bucket.Members[segment];
                if (!moments.TryGetValue(name, out var st)) continue;
                if (st.M.Length != p.Length || st.V.Length != p.Length) throw new DeepSeekSharpException($"optimizer state for '{name}' has the wrong size");
                int at = flatStart - ownStart;
                if (_m32 is not null)
                {
                    st.M.AsSpan(offset, count).CopyTo(_m32[b].AsSpan(at));
                    st.V.AsSpan(offset, count).CopyTo(_v32![b].AsSpan(at));
                }
                else
                {
                    NumericFormats.FloatToBf16(st.M.AsSpan(offset, count), _m16![b].AsSpan(at, count));
                    NumericFormats.FloatToBf16(st.V.AsSpan(offset, count), _v16![b].AsSpan(at, count));
                }
            }
        }
    }
}
