using System.Numerics;

namespace DeepSeekSharp.Tensors;

/// <summary>
/// Reuses the large float arrays behind activations and intermediate gradients from one step to the next. Every
/// training step allocates the same tensors again; taking them from here instead of the GC replaces a fresh,
/// page-faulting, zero-filled allocation (and the collections that follow) with memory the process already owns.
/// Arrays come in size classes (8 per octave, so at most 12.5 % slack) because MoE expert tensors change length with
/// the routing every step; a tensor's <see cref="Tensor.Data"/> may therefore be longer than the tensor. Arrays below
/// <see cref="MinLength"/> are cheap young-generation allocations and are not pooled.
/// </summary>
/// <remarks>
/// An array comes back here only from an owner that drops it: <see cref="Tensor.ReleaseIfUnread"/>, the backward
/// freeing activations it has finished with, and the backward dropping intermediate gradients. The pool holds at
/// most <see cref="MaxBytes"/> (<c>DSS_TENSOR_POOL_MB</c>, default a quarter of the memory the GC may use; 0 turns it
/// off); what does not fit is left to the GC.
/// </remarks>
public static class StoragePool
{
    private static readonly Dictionary<int, Bucket> Buckets = [];
    private static readonly Lock Gate = new();
    private static long _heldBytes;

    /// <summary>Arrays shorter than this many floats are plain allocations (internal so tests can pool everything).</summary>
    internal static int MinLength { get; set; } = 16 * 1024;

    /// <summary>The most bytes the pool keeps (from <c>DSS_TENSOR_POOL_MB</c>; tests set it directly).</summary>
    internal static long MaxBytes { get; set; } = DefaultMaxBytes();

    /// <summary>Bytes held by the pool now (not lent out).</summary>
    public static long HeldBytes { get { lock (Gate) return _heldBytes; } }

    private static long DefaultMaxBytes() =>
        long.TryParse(Environment.GetEnvironmentVariable("DSS_TENSOR_POOL_MB"), out long mb) && mb >= 0 ? mb << 20
        : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;

    /// <summary>The length of the array that serves a request of <paramref name="length"/> floats.</summary>
    internal static int ClassLength(int length)
    {
        if (length < MinLength) return length;
        int step = Math.Max(1, (int)(BitOperations.RoundUpToPowerOf2((uint)length + 1) >> 4)); // 1/8 of the octave below
        long rounded = ((long)length + step - 1) / step * step;
        return (int)Math.Min(rounded, Array.MaxLength);
    }

    /// <summary>An array of at least <paramref name="length"/> floats with undefined contents.</summary>
    public static float[] Rent(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length < MinLength || MaxBytes == 0) return GC.AllocateUninitializedArray<float>(length);
        int size = ClassLength(length);
        lock (Gate)
        {
            if (Buckets.TryGetValue(size, out var bucket))
            {
                bucket.Requested = true;
                if (bucket.Arrays.TryPop(out var buffer))
                {
                    _heldBytes -= 4L * size;
                    return buffer;
                }
            }
        }
        return GC.AllocateUninitializedArray<float>(size);
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
        int size = buffer.Length;
        if (size < MinLength || ClassLength(size) != size) return;
        lock (Gate)
        {
            if (_heldBytes + 4L * size > MaxBytes) return;
            if (!Buckets.TryGetValue(size, out var bucket)) Buckets[size] = bucket = new Bucket();
            bucket.Arrays.Push(buffer);
            _heldBytes += 4L * size;
        }
    }

    /// <summary>
    /// Drops the arrays of every size class nobody asked for since the previous call. Called once per training step
    /// (by <c>Backprop.Backward</c> with <c>freeActivations</c>): MoE expert tensors change size class with the
    /// routing, and classes a step no longer uses would otherwise sit here until the cap.
    /// </summary>
    public static void TrimUnused()
    {
        lock (Gate)
        {
            foreach (var (size, bucket) in Buckets)
            {
                if (!bucket.Requested)
                {
                    _heldBytes -= 4L * size * bucket.Arrays.Count;
                    bucket.Arrays.Clear();
                }
                bucket.Requested = false;
            }
        }
    }

    private sealed class Bucket
    {
        public Stack<float[]> Arrays { get; } = new();
        public bool Requested { get; set; }
    }

    /// <summary>Drops everything held (e.g. after training, before a differently shaped workload).</summary>
    public static void Clear()
    {
        lock (Gate)
        {
            Buckets.Clear();
            _heldBytes = 0;
        }
    }
}
