namespace DeepSeekSharp.Distributed;

/// <summary>
/// A world of one process: every collective is a copy (or nothing), no MPI library is loaded. What
/// <see cref="Communicator.CreateWorld()"/> returns when no launcher started the process.
/// </summary>
public sealed class SingleProcessCommunicator : ICommunicator
{
    public int Rank => 0;

    public int Size => 1;

    public string Description => "single process";

    public ICommunicator Split(int color, int key)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(color);
        return new SingleProcessCommunicator();
    }

    public void Barrier() { }

    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged => CollectiveArguments.Root(root, 1, "Broadcast");

    public void AllReduce<T>(ReadOnlySpan<T> send, Span<T> receive, ReduceOp op) where T : unmanaged
    {
        CollectiveArguments.SameLength(send.Length, receive.Length, "AllReduce");
        CollectiveArguments.Disjoint(send, receive, "AllReduce");
        send.CopyTo(receive);
    }

    public void AllReduce<T>(Span<T> buffer, ReduceOp op) where T : unmanaged { }

    public void ReduceScatter<T>(ReadOnlySpan<T> send, Span<T> receive, ReduceOp op) where T : unmanaged
    {
        CollectiveArguments.Blocks(send.Length, receive.Length, 1, "ReduceScatter", "send");
        CollectiveArguments.Disjoint(send, receive, "ReduceScatter");
        send.CopyTo(receive);
    }

    public void AllGather<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        CollectiveArguments.Blocks(receive.Length, send.Length, 1, "AllGather", "receive");
        CollectiveArguments.Disjoint(send, receive, "AllGather");
        send.CopyTo(receive);
    }

    public void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        CollectiveArguments.SameLength(send.Length, receive.Length, "AllToAll");
        CollectiveArguments.Disjoint(send, receive, "AllToAll");
        send.CopyTo(receive);
    }

    public void AllToAllV<T>(ReadOnlySpan<T> send, ReadOnlySpan<int> sendCounts, ReadOnlySpan<int> sendOffsets,
        Span<T> receive, ReadOnlySpan<int> receiveCounts, ReadOnlySpan<int> receiveOffsets) where T : unmanaged
    {
        CollectiveArguments.Vector(sendCounts, sendOffsets, send.Length, 1, "AllToAllV", "send");
        CollectiveArguments.Vector(receiveCounts, receiveOffsets, receive.Length, 1, "AllToAllV", "receive");
        CollectiveArguments.SameLength(sendCounts[0], receiveCounts[0], "AllToAllV");
        CollectiveArguments.Disjoint(send, receive, "AllToAllV");
        send.Slice(sendOffsets[0], sendCounts[0]).CopyTo(receive.Slice(receiveOffsets[0]));
    }

    public void StartAllReduce<T>(Memory<T> buffer, ReduceOp op, CollectiveRequest request) where T : unmanaged => request.ThrowIfActive();

    public void StartAllGather<T>(ReadOnlyMemory<T> send, Memory<T> receive, CollectiveRequest request) where T : unmanaged
    {
        request.ThrowIfActive();
        AllGather(send.Span, receive.Span);
    }

    public void StartAllToAllV<T>(ReadOnlyMemory<T> send, ReadOnlyMemory<int> sendCounts, ReadOnlyMemory<int> sendOffsets,
        Memory<T> receive, ReadOnlyMemory<int> receiveCounts, ReadOnlyMemory<int> receiveOffsets, CollectiveRequest request) where T : unmanaged
    {
        request.ThrowIfActive();
        AllToAllV(send.Span, sendCounts.Span, sendOffsets.Span, receive.Span, receiveCounts.Span, receiveOffsets.Span);
    }

    public void Abort(int exitCode) => Environment.Exit(exitCode);

    public void Dispose() { }
}
