using System.Numerics;

namespace DeepSeekSharp.Tensors;

/// <summary>
/// Reuses the large float arrays behind activations and intermediate gradients (and the byte arrays behind FP8
/// activation caches) from one step to the next. Every
/// training step allocates the same tensors again; taking them from here instead of the GC replaces a fresh,
/// page-faulting, zero-filled allocation (and the collections that follow) with memory the process already owns.
/// Arrays come in size classes (8 per octave, so at most 12.5 % slack) because MoE expert tensors change length with
/// the routing every step, and a request whose class is empty takes an idle array up to an octave larger; a tensor's
/// <see cref="Tensor.Data"/> may therefore be longer than the tensor (up to about twice). Arrays below
/// <see cref="MinLength"/> floats (4 × that many bytes) are cheap young-generation allocations and are not pooled.
/// </summary>
/// <remarks>
/// An array comes back here only from an owner that drops it: <see cref="Tensor.ReleaseIfUnread"/>, the backward
/// freeing activations it has finished with, and the backward dropping intermediate gradients. The pool holds at
/// most <see cref="MaxBytes"/> (<c>DSS_TENSOR_POOL_MB</c>, default a quarter of the memory the GC may use; 0 turns it
/// off); what does not fit is left to the GC.
/// </remarks>
public static class StoragePool
{
    /// <summary>The process's pool, the one every tensor uses.</summary>
    internal static SizeClassPool Shared { get; } = new(minLength: 16 * 1024, DefaultMaxBytes());

    /// <summary>Arrays shorter than this many floats are plain allocations (internal so tests can pool everything).</summary>
    internal static int MinLength { get => Shared.MinLength; set => Shared.MinLength = value; }

    /// <summary>The most bytes the pool keeps (from <c>DSS_TENSOR_POOL_MB</c>; tests set it directly).</summary>
    internal static long MaxBytes { get => Shared.MaxBytes; set => Shared.MaxBytes = value; }

    /// <summary>Bytes held by the pool now (not lent out).</summary>
    public static long HeldBytes => Shared.HeldBytes;

    private static long DefaultMaxBytes() =>
        long.TryParse(Environment.GetEnvironmentVariable("DSS_TENSOR_POOL_MB"), out long mb) && mb >= 0 ? mb << 20
        : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;

    /// <summary>The length of the float array that serves a request of <paramref name="length"/> floats.</summary>
    internal static int ClassLength(int length) => SizeClassPool.ClassLength(length, Shared.MinLength);

    /// <summary>
    /// Checking mode (tests): every float array rented is longer than asked and arrives filled with NaN, and every
    /// array given back is filled with NaN and never lent again. Code that sizes work by an array instead of its
    /// tensor, reads values it never wrote, or reads storage after giving it back then computes NaN (or throws)
    /// instead of passing by luck with whatever a recycled array held.
    /// </summary>
    internal static bool CheckingMode { get; set; }

    /// <summary>An array of at least <paramref name="length"/> floats with undefined contents.</summary>
    public static float[] Rent(int length)
    {
        if (!CheckingMode) return Shared.Rent(length);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        var poisoned = GC.AllocateUninitializedArray<float>(length + 1 + length / 8);
        Array.Fill(poisoned, float.NaN);
        return poisoned;
    }

    /// <summary>An all-zero array of at least <paramref name="length"/> floats (the slack too, so it never holds stale values).</summary>
    public static float[] RentZeroed(int length)
    {
        float[] buffer = Rent(length);
        Array.Clear(buffer);
        return buffer;
    }

    /// <summary>Takes back an array its owner will never touch again (arrays not of a pooled size are left to the GC).</summary>
    public static void Return(float[] buffer)
    {
        if (CheckingMode) Array.Fill(buffer, float.NaN);
        else Shared.Return(buffer);
    }

    /// <summary>A byte array of at least <paramref name="length"/> bytes with undefined contents (FP8 codes).</summary>
    public static byte[] RentBytes(int length) => Shared.RentBytes(length);

    /// <summary>Takes back a byte array its owner will never touch again.</summary>
    public static void ReturnBytes(byte[] buffer) => Shared.ReturnBytes(buffer);

    /// <summary>
    /// Drops the arrays of every size class nobody asked for since the previous call. Called once per training step
    /// (by <c>Backprop.Backward</c> with <c>freeActivations</c>): MoE expert tensors change size class with the
    /// routing, and classes a step no longer uses would otherwise sit here until the cap.
    /// </summary>
    public static void TrimUnused() => Shared.TrimUnused();

    /// <summary>Drops everything held (e.g. after training, before a differently shaped workload).</summary>
    public static void Clear() => Shared.Clear();
}

/// <summary>
/// The policy behind <see cref="StoragePool"/>: float and byte arrays in size classes (8 per octave), a request whose
/// class is empty served by an idle array up to an octave larger, a byte cap, and trimming of classes nobody asked
/// for. An instance of its own lets tests check the policy without the arrays the rest of the process lends and
/// returns at the same time.
/// </summary>
internal sealed class SizeClassPool(int minLength, long maxBytes)
{
    private const int ClassesPerOctave = 8;
    private readonly Lock _gate = new();
    private readonly ClassPool<float> _floats = new(sizeof(float));
    private readonly ClassPool<byte> _bytes = new(1);
    private long _heldBytes;

    /// <summary>Float arrays shorter than this (byte arrays shorter than 4 × this) are plain allocations.</summary>
    public int MinLength { get; set; } = minLength;

    /// <summary>The most bytes the pool keeps (0 turns it off).</summary>
    public long MaxBytes { get; set; } = maxBytes;

    /// <summary>Bytes held now (not lent out).</summary>
    public long HeldBytes { get { lock (_gate) return _heldBytes; } }

    /// <summary>The array length of the class that serves a request of <paramref name="length"/> elements.</summary>
    public static int ClassLength(int length, int minLength)
    {
        if (length < minLength) return length;
        int step = Math.Max(1, (int)(BitOperations.RoundUpToPowerOf2((uint)length + 1) >> 4)); // 1/8 of the octave below
        long rounded = ((long)length + step - 1) / step * step;
        return (int)Math.Min(rounded, Array.MaxLength);
    }

    /// <summary>The next larger class length (0 past the largest array).</summary>
    private static int NextClass(int size, int minLength) => size >= Array.MaxLength ? 0 : ClassLength(size + 1, minLength);

    public float[] Rent(int length) => _floats.Rent(this, length, MinLength);

    public void Return(float[] buffer) => _floats.Return(this, buffer, MinLength);

    public byte[] RentBytes(int length) => _bytes.Rent(this, length, 4 * MinLength);

    public void ReturnBytes(byte[] buffer) => _bytes.Return(this, buffer, 4 * MinLength);

    /// <summary>Drops the arrays of every size class nobody asked for since the previous call.</summary>
    public void TrimUnused()
    {
        lock (_gate)
        {
            _floats.TrimUnused(this);
            _bytes.TrimUnused(this);
        }
    }

    /// <summary>Drops everything held.</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _floats.Clear(this);
            _bytes.Clear(this);
        }
    }

    /// <summary>The buckets of one element type; every member runs under the owner's gate except the allocation.</summary>
    private sealed class ClassPool<T>(int elementBytes)
    {
        private readonly Dictionary<int, Bucket> _buckets = [];

        public T[] Rent(SizeClassPool owner, int length, int minLength)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(length);
            if (length < minLength || owner.MaxBytes == 0) return GC.AllocateUninitializedArray<T>(length);
            int size = ClassLength(length, minLength);
            lock (owner._gate)
            {
                // The request's own class first, then up to an octave above: MoE expert tensors change class with
                // the routing every step, and an idle larger array serves better than a new one beside it.
                int candidate = size;
                for (int up = 0; up <= ClassesPerOctave && candidate > 0; up++, candidate = NextClass(candidate, minLength))
                {
                    if (!_buckets.TryGetValue(candidate, out var bucket)) continue;
                    bucket.Requested = true;
                    if (bucket.Arrays.TryPop(out var buffer))
                    {
                        owner._heldBytes -= (long)elementBytes * candidate;
                        return buffer;
                    }
                }
            }
            return GC.AllocateUninitializedArray<T>(size);
        }

        public void Return(SizeClassPool owner, T[] buffer, int minLength)
        {
            int size = buffer.Length;
            if (size < minLength || ClassLength(size, minLength) != size) return;
            lock (owner._gate)
            {
                if (owner._heldBytes + (long)elementBytes * size > owner.MaxBytes) return;
                if (!_buckets.TryGetValue(size, out var bucket)) _buckets[size] = bucket = new Bucket();
                bucket.Arrays.Push(buffer);
                owner._heldBytes += (long)elementBytes * size;
            }
        }

        public void TrimUnused(SizeClassPool owner)
        {
            foreach (var (size, bucket) in _buckets)
            {
                if (!bucket.Requested)
                {
                    owner._heldBytes -= (long)elementBytes * size * bucket.Arrays.Count;
                    bucket.Arrays.Clear();
                }
                bucket.Requested = false;
            }
        }

        public void Clear(SizeClassPool owner)
        {
            foreach (var (size, bucket) in _buckets) owner._heldBytes -= (long)elementBytes * size * bucket.Arrays.Count;
            _buckets.Clear();
        }

        private sealed class Bucket
        {
            public Stack<T[]> Arrays { get; } = new();
            public bool Requested { get; set; }
        }
    }
}
