namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>
/// Grid and block shapes of every kernel in kernels.cu (host-side, unit-tested): how work is cut, and the limits it
/// must respect (a block's threads a multiple of 32 for the reductions, grid.y/z at most 65,535, shared memory).
/// </summary>
public static class LaunchPlan
{
    /// <summary>The most rows one launch takes along grid.y (the hardware limit); callers launch again from the next row.</summary>
    public const int MaxGridY = 65535;

    /// <summary>Threads per block of the elementwise kernels (grid-stride loops).</summary>
    public const int ElementwiseThreads = 256;

    /// <summary>Blocks of an elementwise kernel over <paramref name="count"/> elements: enough to fill a GPU, grid-stride beyond.</summary>
    public static Dim3 ElementwiseGrid(long count) => new((uint)Math.Clamp((count + ElementwiseThreads - 1) / ElementwiseThreads, 1, 4096));

    /// <summary>Threads of a one-block-per-row kernel over rows of width <paramref name="width"/>: 32..256, a multiple of 32.</summary>
    public static int RowThreads(int width) => Math.Clamp((width + 31) / 32 * 32, 32, 256);

    /// <summary>Threads of a quantiser block (one tile of <paramref name="tileElements"/> values).</summary>
    public static int TileThreads(long tileElements) => (int)Math.Clamp((tileElements + 31) / 32 * 32, 32, 256);

    /// <summary>Threads per block of the attention kernels (one query or key row per block).</summary>
    public const int AttentionThreads = 128;

    /// <summary>Dynamic shared memory of the attention forward: the row's scores [T] and its query [dn + dr].</summary>
    public static int AttentionForwardShared(in MlaAttentionShape s) => checked((s.SeqLen + s.QDim) * sizeof(float));

    /// <summary>Backward, query side: P [T], dP/dS [T] and the dO row [dv].</summary>
    public static int AttentionQueryShared(in MlaAttentionShape s) => checked((2 * s.SeqLen + s.VDim) * sizeof(float));

    /// <summary>Backward, key side: P [T] and dS [T] of one key column.</summary>
    public static int AttentionKeyShared(in MlaAttentionShape s) => checked(2 * s.SeqLen * sizeof(float));

    /// <summary>The attention grid: one block per (row, head, batch); the three extents' hardware limits are checked.</summary>
    public static Dim3 AttentionGrid(in MlaAttentionShape s)
    {
        if (s.Heads > MaxGridY || s.Batch > MaxGridY) throw new ArgumentException($"attention: {s.Heads} heads × {s.Batch} sequences exceed one launch's grid");
        return new Dim3((uint)s.SeqLen, (uint)s.Heads, (uint)s.Batch);
    }

    /// <summary>Splits <paramref name="rows"/> into launches of at most <see cref="MaxGridY"/> rows: (first row, count) pairs.</summary>
    public static IEnumerable<(int First, int Count)> RowChunks(int rows)
    {
        for (int first = 0; first < rows; first += MaxGridY) yield return (first, Math.Min(MaxGridY, rows - first));
    }
}
