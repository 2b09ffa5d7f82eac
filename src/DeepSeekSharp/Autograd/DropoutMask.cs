using System.Numerics;

namespace DeepSeekSharp.Autograd;

/// <summary>
/// An inverted-dropout mask (keep with probability 1 − p, kept values scaled by 1/(1 − p)) that is a pure function of
/// a 64-bit key and each element's index: element i is dropped when hash(key, i) falls below p·2³². Nothing is stored
/// and no generator state advances, so the backward regenerates the forward's mask, an activation recomputation sees
/// the same mask, and a run resumed from a checkpoint draws exactly the masks the uninterrupted run drew (the key is
/// made from seed, step, micro-batch and layer by <see cref="For"/>).
/// </summary>
public readonly record struct DropoutMask
{
    private readonly uint _threshold, _k1, _k2;

    /// <param name="p">drop probability, 0 ≤ p &lt; 1</param>
    /// <param name="key">the mask's identity; different keys give independent masks</param>
    public DropoutMask(float p, ulong key)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must lie in [0, 1)");
        P = p;
        Key = key;
        _threshold = (uint)Math.Min(uint.MaxValue, Math.Round(p * 4294967296.0));
        (_k1, _k2) = ((uint)key, (uint)(key >> 32));
    }

    public float P { get; }

    public ulong Key { get; }

    /// <summary>1/(1 − p), the factor kept elements are multiplied by.</summary>
    public float KeptScale => 1f / (1f - P);

    /// <summary>
    /// The mask of one layer's input in one micro-batch: the key mixes the run's seed, the optimizer step, the
    /// micro-batch within it and a hash of the layer's name (FNV-1a, stable across processes, unlike string.GetHashCode).
    /// </summary>
    public static DropoutMask For(float p, long seed, long step, int microBatch, string layer)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in layer) h = (h ^ c) * 1099511628211UL;
        ulong key = Mix64((ulong)seed) ^ Mix64((ulong)step * 0x9E3779B97F4A7C15UL + 1) ^ Mix64(((ulong)(uint)microBatch << 32) + 2) ^ Mix64(h);
        return new DropoutMask(p, key);
    }

    /// <summary>Whether element <paramref name="index"/> is kept.</summary>
    public bool Keeps(long index) => Hash((uint)index) >= _threshold;

    /// <summary>
    /// y[i] = x[i] · keep(first + i)/(1 − p) (y may be x: in place). The backward of dropout is the same map applied to
    /// the output gradient.
    /// </summary>
    public void Apply(ReadOnlySpan<float> x, long firstIndex, Span<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException("dropout: output shorter than input", nameof(y));
        float scale = KeptScale;
        int i = 0;
        uint first = (uint)firstIndex;
        if (Vector.IsHardwareAccelerated && x.Length >= Vector<float>.Count)
        {
            var threshold = new Vector<uint>(_threshold);
            var kept = new Vector<float>(scale);
            for (; i <= x.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var h = Hash(new Vector<uint>(first + (uint)i) + Vector<uint>.Indices);
                var keep = Vector.AsVectorSingle(Vector.GreaterThanOrEqual(h, threshold));
                var v = new Vector<float>(x.Slice(i)) * kept;
                Vector.ConditionalSelect(keep, v, Vector<float>.Zero).CopyTo(y.Slice(i));
            }
        }
        for (; i < x.Length; i++) y[i] = Hash(first + (uint)i) >= _threshold ? x[i] * scale : 0f;
    }

    // A 32-bit integer hash (the "lowbias32" finaliser) applied twice around the key: every element index gives an
    // independent-looking 32-bit value for a given key. The vector and scalar forms compute the same function.
    private uint Hash(uint i) => Finalize(Finalize(i ^ _k1) + _k2);

    private Vector<uint> Hash(Vector<uint> i) => Finalize(Finalize(i ^ new Vector<uint>(_k1)) + new Vector<uint>(_k2));

    private static uint Finalize(uint x)
    {
        x ^= x >> 16;
        x *= 0x7feb352dU;
        x ^= x >> 15;
        x *= 0x846ca68bU;
        return x ^ (x >> 16);
    }

    private static Vector<uint> Finalize(Vector<uint> x)
    {
        x ^= Vector.ShiftRightLogical(x, 16);
        x *= new Vector<uint>(0x7feb352dU);
        x ^= Vector.ShiftRightLogical(x, 15);
        x *= new Vector<uint>(0x846ca68bU);
        return x ^ Vector.ShiftRightLogical(x, 16);
    }

    private static ulong Mix64(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
