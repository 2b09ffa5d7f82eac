namespace DeepSeekSharp.Distributed;

/// <summary>The reductions a collective can apply elementwise.</summary>
public enum ReduceOp
{
    Sum,
    Max,
    Min,
}

/// <summary>
/// A group of processes (ranks 0..Size−1) and the collectives they run together: MPI's communicator
/// (<see cref="MpiCommunicator"/>) or a world of one (<see cref="SingleProcessCommunicator"/>). This object is the
/// context in which rank and world size travel; <see cref="Communicator.CreateWorld()"/> picks the implementation.
/// </summary>
/// <remarks>
/// Every rank of the group must make the same calls in the same order. Element types: float, double, int, long, byte,
/// ushort (BF16 or FP8 payloads travel as their raw bits). Lengths are checked up front, the calls allocate nothing,
/// and a failing MPI call throws <see cref="MpiException"/> naming the call. MPI's reductions
/// (<see cref="AllReduce{T}(ReadOnlySpan{T}, Span{T}, ReduceOp)"/>, <see cref="ReduceScatter{T}"/>) sum in whatever
/// order the library's algorithm picks for the group's size, so float sums from them can differ in the last bits
/// between world sizes; <see cref="GradientBucket"/> sums in a fixed order instead. Not thread-safe: call from one
/// thread at a time.
/// </remarks>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's index in the group, 0..Size−1.</summary>
    int Rank { get; }

    /// <summary>How many processes the group has.</summary>
    int Size { get; }

    /// <summary>What runs the group, e.g. "Open MPI v4.1.4, 4 ranks" or "single process".</summary>
    string Description { get; }

    /// <summary>
    /// Splits the group: ranks passing the same <paramref name="color"/> (≥ 0) form a new group, ordered by
    /// <paramref name="key"/> then by rank here. Every rank of this group must call it. Dispose the result before this one.
    /// </summary>
    ICommunicator Split(int color, int key);

    /// <summary>Returns once every rank has called it.</summary>
    void Barrier();

    /// <summary>Copies <paramref name="buffer"/> of rank <paramref name="root"/> into every rank's buffer (same length everywhere).</summary>
    void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged;

    /// <summary>receive[i] = op over ranks of send[i]; <paramref name="send"/> and <paramref name="receive"/> have the same length and do not overlap.</summary>
    void AllReduce<T>(ReadOnlySpan<T> send, Span<T> receive, ReduceOp op) where T : unmanaged;

    /// <summary>buffer[i] = op over ranks of buffer[i], in place.</summary>
    void AllReduce<T>(Span<T> buffer, ReduceOp op) where T : unmanaged;

    /// <summary>
    /// <paramref name="send"/> is Size blocks of receive.Length; rank r receives block r reduced over ranks
    /// (MPI_Reduce_scatter_block).
    /// </summary>
    void ReduceScatter<T>(ReadOnlySpan<T> send, Span<T> receive, ReduceOp op) where T : unmanaged;

    /// <summary><paramref name="receive"/> is Size blocks of send.Length; block r is rank r's <paramref name="send"/>.</summary>
    void AllGather<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged;

    /// <summary>Both buffers are Size equal blocks; block d of <paramref name="send"/> goes to rank d, arriving as block (this rank) there.</summary>
    void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged;

    /// <summary>
    /// Rank d receives send[sendOffsets[d] .. + sendCounts[d]) at its receive[receiveOffsets[r] .. + receiveCounts[r]) for
    /// this rank r. Counts and offsets have Size entries; receiveCounts[r] must equal what rank r sends here.
    /// </summary>
    void AllToAllV<T>(ReadOnlySpan<T> send, ReadOnlySpan<int> sendCounts, ReadOnlySpan<int> sendOffsets,
        Span<T> receive, ReadOnlySpan<int> receiveCounts, ReadOnlySpan<int> receiveOffsets) where T : unmanaged;

    /// <summary>Non-blocking in-place <see cref="AllReduce{T}(Span{T}, ReduceOp)"/>: the buffer belongs to the collective until <paramref name="request"/> completes.</summary>
    void StartAllReduce<T>(Memory<T> buffer, ReduceOp op, CollectiveRequest request) where T : unmanaged;

    /// <summary>Non-blocking <see cref="AllGather{T}"/>; the buffers belong to the collective until <paramref name="request"/> completes.</summary>
    void StartAllGather<T>(ReadOnlyMemory<T> send, Memory<T> receive, CollectiveRequest request) where T : unmanaged;

    /// <summary>
    /// Non-blocking <see cref="AllToAllV{T}"/>; the buffers, counts and offsets belong to the collective until
    /// <paramref name="request"/> completes.
    /// </summary>
    void StartAllToAllV<T>(ReadOnlyMemory<T> send, ReadOnlyMemory<int> sendCounts, ReadOnlyMemory<int> sendOffsets,
        Memory<T> receive, ReadOnlyMemory<int> receiveCounts, ReadOnlyMemory<int> receiveOffsets, CollectiveRequest request) where T : unmanaged;

    /// <summary>Ends every process of the job with <paramref name="exitCode"/> (MPI_Abort): for an error one rank cannot recover from while the others wait.</summary>
    void Abort(int exitCode);
}
