namespace DeepSeekSharp.Distributed;

/// <summary>
/// The one place collective arguments are checked, for every communicator, before any data moves: a wrong length on
/// one rank would otherwise corrupt memory or hang the whole group inside MPI.
/// </summary>
internal static class CollectiveArguments
{
    public static void Root(int root, int size, string call)
    {
        if ((uint)root >= (uint)size) throw new ArgumentOutOfRangeException(nameof(root), $"{call}: root {root} is not a rank of a group of {size}");
    }

    public static void SameLength(int send, int receive, string call)
    {
        if (send != receive) throw new ArgumentException($"{call}: send has {send} elements but receive has {receive}");
    }

    public static void Blocks(int whole, int block, int size, string call, string wholeName)
    {
        if ((long)block * size != whole)
            throw new ArgumentException($"{call}: {wholeName} has {whole} elements, expected {size} blocks of {block}");
    }

    public static void Disjoint<T>(ReadOnlySpan<T> send, ReadOnlySpan<T> receive, string call)
    {
        if (send.Overlaps(receive)) throw new ArgumentException($"{call}: send and receive overlap (use the in-place overload)");
    }

    public static void Vector(ReadOnlySpan<int> counts, ReadOnlySpan<int> offsets, int bufferLength, int size, string call, string side)
    {
        if (counts.Length != size || offsets.Length != size)
            throw new ArgumentException($"{call}: {side} counts and offsets need {size} entries, got {counts.Length} and {offsets.Length}");
        for (int r = 0; r < size; r++)
            if (counts[r] < 0 || offsets[r] < 0 || (long)offsets[r] + counts[r] > bufferLength)
                throw new ArgumentException($"{call}: {side} block {r} [{offsets[r]}, +{counts[r]}) lies outside the {bufferLength}-element buffer");
    }
}
