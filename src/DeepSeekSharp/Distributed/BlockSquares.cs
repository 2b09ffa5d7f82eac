using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// Sums of squares of fixed blocks of a flat gradient, for a global norm that has the same bits on every rank and for
/// every rank count: a block's sum depends only on its <see cref="Length"/> values (fixed lanes in a fixed order,
/// never the address, unlike a library reduction that aligns its loads), and shards start on block boundaries
/// (<see cref="ShardLayout"/> with this alignment), so the list of blocks is the same however the vector is cut.
/// </summary>
public static class BlockSquares
{
    /// <summary>Elements per block (also the shard alignment the trainer uses).</summary>
    public const int Length = 1024;

    /// <summary>
    /// Writes Σ x² (in double) of each consecutive <see cref="Length"/>-element block of <paramref name="values"/> (a
    /// multiple of <see cref="Length"/> long) into <paramref name="sums"/>.
    /// </summary>
    public static void Compute(ReadOnlySpan<float> values, Span<double> sums)
    {
        if (values.Length % Length != 0 || sums.Length != values.Length / Length)
            throw new ArgumentException($"{values.Length} values are not {sums.Length} blocks of {Length}");
        for (int b = 0; b < sums.Length; b++) sums[b] = Block(values.Slice(b * Length, Length));
    }

    private static double Block(ReadOnlySpan<float> block)
    {
        ref float x = ref MemoryMarshal.GetReference(block);
        var low = Vector256<double>.Zero;
        var high = Vector256<double>.Zero;
        // Length is a multiple of 8: no tail.
        for (int i = 0; i < block.Length; i += 8)
        {
            var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref Unsafe.Add(ref x, i)));
            low += lo * lo;
            high += hi * hi;
        }
        var total = low + high;
        return (total[0] + total[1]) + (total[2] + total[3]);
    }
}
