namespace DeepSeekSharp.Data;

/// <summary>
/// Samples training windows from a packed token stream (documents joined with EOS). The stream's tail
/// (<c>validationFraction</c>) is held out. Training windows are the non-overlapping windows of length T of the
/// training part, visited in a fresh seeded permutation each epoch, so micro-batch i is a pure function of
/// (seed, i): resuming only needs the counter.
/// </summary>
public sealed class PackedBatches
{
    private readonly TokenFile _tokens;
    private readonly int _seqLen;
    private readonly int _seed;
    private readonly long _trainTokens;
    private readonly long _trainWindows;
    private int[]? _permutation;
    private long _permutationEpoch = -1;

    public PackedBatches(TokenFile tokens, int seqLen, double validationFraction, int seed)
    {
        _tokens = tokens;
        _seqLen = seqLen;
        _seed = seed;
        long valTokens = (long)(tokens.Count * Math.Clamp(validationFraction, 0, 0.5));
        _trainTokens = tokens.Count - valTokens;
        ValidationStart = _trainTokens;
        ValidationTokens = valTokens;
        _trainWindows = _trainTokens / seqLen;
        if (_trainWindows < 1) throw new DeepSeekSharpException($"{tokens.Path}: {tokens.Count} tokens are too few for sequence_len {seqLen}");
        if (_trainWindows > int.MaxValue) throw new DeepSeekSharpException($"{tokens.Path}: too many windows for one permutation");
    }

    public long TrainWindows => _trainWindows;

    public long ValidationStart { get; }

    public long ValidationTokens { get; }

    public int ValidationWindows => (int)Math.Min(int.MaxValue, ValidationTokens / _seqLen);

    /// <summary>Fills <paramref name="destination"/> [B·T] with micro-batch number <paramref name="index"/>.</summary>
    public void TrainBatch(long index, int batch, Span<int> destination)
    {
        for (int b = 0; b < batch; b++)
        {
            long global = index * batch + b;
            long epoch = global / _trainWindows;
            int slot = (int)(global % _trainWindows);
            if (epoch != _permutationEpoch) BuildPermutation(epoch);
            _tokens.Read((long)_permutation![slot] * _seqLen, destination.Slice(b * _seqLen, _seqLen));
        }
    }

    /// <summary>Fills validation window <paramref name="window"/> (in order) into <paramref name="destination"/> [T].</summary>
    public void ValidationWindow(int window, Span<int> destination) =>
        _tokens.Read(ValidationStart + (long)window * _seqLen, destination[.._seqLen]);

    private void BuildPermutation(long epoch)
    {
        var perm = _permutation ?? new int[_trainWindows];
        for (int i = 0; i < perm.Length; i++) perm[i] = i;
        // HashCode.Combine is randomised per process; resume needs the same order in every process.
        new Random(unchecked(_seed * 1_000_003 + (int)epoch)).Shuffle(perm);
        _permutation = perm;
        _permutationEpoch = epoch;
    }
}
