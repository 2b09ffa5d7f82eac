namespace DeepSeekSharp.Distributed;

/// <summary>
/// An MPI communicator (Open MPI). The world one initialises MPI (MPI_Init_thread, serialized: calls may come from
/// any thread, one at a time) and finalises it on Dispose; <see cref="Split"/> makes sub-groups. Errors come back as
/// <see cref="MpiException"/> rather than MPI's default of aborting the job (MPI_ERRORS_RETURN), so the caller can
/// print one line first.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    private readonly MpiLibrary _mpi;
    private readonly bool _isWorld;
    private IntPtr _comm;

    private MpiCommunicator(MpiLibrary mpi, IntPtr comm, bool isWorld, string version)
    {
        _mpi = mpi;
        _comm = comm;
        _isWorld = isWorld;
        int rank, size;
        mpi.Check(mpi.CommRank(comm, &rank), "MPI_Comm_rank", -1);
        mpi.Check(mpi.CommSize(comm, &size), "MPI_Comm_size", rank);
        Rank = rank;
        Size = size;
        Version = version;
    }

    /// <summary>Initialises MPI and returns MPI_COMM_WORLD. MPI can be initialised once per process.</summary>
    internal static MpiCommunicator InitWorld(MpiLibrary mpi)
    {
        int initialized, finalized, provided;
        mpi.Check(mpi.Initialized(&initialized), "MPI_Initialized", -1);
        mpi.Check(mpi.Finalized(&finalized), "MPI_Finalized", -1);
        if (initialized != 0 || finalized != 0)
            throw new MpiException("MPI_Init_thread: MPI was already initialised in this process (one world per process: dispose it at exit, not in between)");
        mpi.Check(mpi.InitThread(null, null, MpiLibrary.ThreadSerialized, &provided), "MPI_Init_thread", -1);
        mpi.Check(mpi.CommSetErrhandler(mpi.CommWorld, mpi.ErrorsReturn), "MPI_Comm_set_errhandler", -1);
        if (provided < MpiLibrary.ThreadSerialized)
        {
            mpi.Finalize();
            throw new MpiException($"MPI_Init_thread: the MPI library offers thread level {provided}, DeepSeekSharp needs MPI_THREAD_SERIALIZED ({MpiLibrary.ThreadSerialized})");
        }
        return new MpiCommunicator(mpi, mpi.CommWorld, isWorld: true, mpi.Version());
    }

    public int Rank { get; }

    public int Size { get; }

    /// <summary>The MPI library's own version line, e.g. "Open MPI v4.1.4".</summary>
    public string Version { get; }

    /// <summary>The libmpi that was loaded.</summary>
    public string LibraryPath => _mpi.Path;

    public string Description => $"{Version}, {Size} rank{(Size == 1 ? "" : "s")}";

    public ICommunicator Split(int color, int key)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(color);
        IntPtr sub;
        Check(_mpi.CommSplit(Comm, color, key, &sub), "MPI_Comm_split");
        return new MpiCommunicator(_mpi, sub, isWorld: false, Version);
    }

    public void Barrier() => Check(_mpi.Barrier(Comm), "MPI_Barrier");

    public void Broadcast<T>(Span<T> buffer, int root) where T : unmanaged
    {
        CollectiveArguments.Root(root, Size, "Broadcast");
        fixed (T* p = buffer) Check(_mpi.Bcast(p, buffer.Length, Type<T>(), root, Comm), "MPI_Bcast");
    }

    public void AllReduce<T>(ReadOnlySpan<T> send, Span<T> receive, ReduceOp op) where T : unmanaged
    {
        CollectiveArguments.SameLength(send.Length, receive.Length, "AllReduce");
        CollectiveArguments.Disjoint(send, receive, "AllReduce");
        fixed (T* s = send)
        fixed (T* r = receive)
            Check(_mpi.Allreduce(s, r, send.Length, Type<T>(), Op(op), Comm), "MPI_Allreduce");
    }

    public void AllReduce<T>(Span<T> buffer, ReduceOp op) where T : unmanaged
    {
        fixed (T* p = buffer) Check(_mpi.Allreduce((void*)MpiLibrary.InPlace, p, buffer.Length, Type<T>(), Op(op), Comm), "MPI_Allreduce");
    }

    public void ReduceScatter<T>(ReadOnlySpan<T> send, Span<T> receive, ReduceOp op) where T : unmanaged
    {
        CollectiveArguments.Blocks(send.Length, receive.Length, Size, "ReduceScatter", "send");
        CollectiveArguments.Disjoint(send, receive, "ReduceScatter");
        fixed (T* s = send)
        fixed (T* r = receive)
            Check(_mpi.ReduceScatterBlock(s, r, receive.Length, Type<T>(), Op(op), Comm), "MPI_Reduce_scatter_block");
    }

    public void AllGather<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        CollectiveArguments.Blocks(receive.Length, send.Length, Size, "AllGather", "receive");
        CollectiveArguments.Disjoint(send, receive, "AllGather");
        fixed (T* s = send)
        fixed (T* r = receive)
            Check(_mpi.Allgather(s, send.Length, Type<T>(), r, send.Length, Type<T>(), Comm), "MPI_Allgather");
    }

    public void AllToAll<T>(ReadOnlySpan<T> send, Span<T> receive) where T : unmanaged
    {
        CollectiveArguments.SameLength(send.Length, receive.Length, "AllToAll");
        CollectiveArguments.Blocks(send.Length, send.Length / Size, Size, "AllToAll", "send");
        CollectiveArguments.Disjoint(send, receive, "AllToAll");
        int block = send.Length / Size;
        fixed (T* s = send)
        fixed (T* r = receive)
            Check(_mpi.Alltoall(s, block, Type<T>(), r, block, Type<T>(), Comm), "MPI_Alltoall");
    }

    public void AllToAllV<T>(ReadOnlySpan<T> send, ReadOnlySpan<int> sendCounts, ReadOnlySpan<int> sendOffsets,
        Span<T> receive, ReadOnlySpan<int> receiveCounts, ReadOnlySpan<int> receiveOffsets) where T : unmanaged
    {
        CollectiveArguments.Vector(sendCounts, sendOffsets, send.Length, Size, "AllToAllV", "send");
        CollectiveArguments.Vector(receiveCounts, receiveOffsets, receive.Length, Size, "AllToAllV", "receive");
        CollectiveArguments.Disjoint(send, receive, "AllToAllV");
        fixed (T* s = send)
        fixed (T* r = receive)
        fixed (int* sc = sendCounts)
        fixed (int* so = sendOffsets)
        fixed (int* rc = receiveCounts)
        fixed (int* ro = receiveOffsets)
            Check(_mpi.Alltoallv(s, sc, so, Type<T>(), r, rc, ro, Type<T>(), Comm), "MPI_Alltoallv");
    }

    public void StartAllReduce<T>(Memory<T> buffer, ReduceOp op, CollectiveRequest request) where T : unmanaged
    {
        request.ThrowIfActive();
        void* p = request.Pin<T>(buffer);
        IntPtr handle;
        Started(request, _mpi.Iallreduce((void*)MpiLibrary.InPlace, p, buffer.Length, Type<T>(), Op(op), Comm, &handle), handle, "MPI_Iallreduce");
    }

    public void StartAllGather<T>(ReadOnlyMemory<T> send, Memory<T> receive, CollectiveRequest request) where T : unmanaged
    {
        request.ThrowIfActive();
        CollectiveArguments.Blocks(receive.Length, send.Length, Size, "AllGather", "receive");
        CollectiveArguments.Disjoint(send.Span, receive.Span, "AllGather");
        void* s = request.Pin(send), r = request.Pin<T>(receive);
        IntPtr handle;
        Started(request, _mpi.Iallgather(s, send.Length, Type<T>(), r, send.Length, Type<T>(), Comm, &handle), handle, "MPI_Iallgather");
    }

    public void StartAllToAllV<T>(ReadOnlyMemory<T> send, ReadOnlyMemory<int> sendCounts, ReadOnlyMemory<int> sendOffsets,
        Memory<T> receive, ReadOnlyMemory<int> receiveCounts, ReadOnlyMemory<int> receiveOffsets, CollectiveRequest request) where T : unmanaged
    {
        request.ThrowIfActive();
        CollectiveArguments.Vector(sendCounts.Span, sendOffsets.Span, send.Length, Size, "AllToAllV", "send");
        CollectiveArguments.Vector(receiveCounts.Span, receiveOffsets.Span, receive.Length, Size, "AllToAllV", "receive");
        CollectiveArguments.Disjoint(send.Span, receive.Span, "AllToAllV");
        void* s = request.Pin(send), r = request.Pin<T>(receive);
        int* sc = (int*)request.Pin(sendCounts), so = (int*)request.Pin(sendOffsets);
        int* rc = (int*)request.Pin(receiveCounts), ro = (int*)request.Pin(receiveOffsets);
        IntPtr handle;
        Started(request, _mpi.Ialltoallv(s, sc, so, Type<T>(), r, rc, ro, Type<T>(), Comm, &handle), handle, "MPI_Ialltoallv");
    }

    public void Abort(int exitCode) => _mpi.Abort(_mpi.CommWorld, exitCode);

    internal void WaitRequest(ref IntPtr handle)
    {
        IntPtr h = handle;
        int rc = _mpi.Wait(&h, null);
        handle = h;
        Check(rc, "MPI_Wait");
    }

    internal bool TestRequest(ref IntPtr handle)
    {
        IntPtr h = handle;
        int flag;
        int rc = _mpi.Test(&h, &flag, null);
        handle = h;
        Check(rc, "MPI_Test");
        return flag != 0;
    }

    /// <summary>Frees a split communicator, or finalises MPI for the world one (after which no MPI call may be made).</summary>
    public void Dispose()
    {
        if (_comm == IntPtr.Zero) return;
        int finalized;
        if (_mpi.Finalized(&finalized) == MpiLibrary.Success && finalized == 0)
        {
            if (_isWorld) Check(_mpi.Finalize(), "MPI_Finalize");
            else
            {
                IntPtr c = _comm;
                Check(_mpi.CommFree(&c), "MPI_Comm_free");
            }
        }
        _comm = IntPtr.Zero;
    }

    private IntPtr Comm => _comm != IntPtr.Zero ? _comm : throw new ObjectDisposedException(nameof(MpiCommunicator));

    private void Started(CollectiveRequest request, int code, IntPtr handle, string call)
    {
        if (code != MpiLibrary.Success)
        {
            request.ReleasePins();
            Check(code, call);
        }
        request.Started(this, handle);
    }

    private void Check(int code, string call) => _mpi.Check(code, call, Rank);

    private IntPtr Op(ReduceOp op) => op switch
    {
        ReduceOp.Sum => _mpi.OpSum,
        ReduceOp.Max => _mpi.OpMax,
        ReduceOp.Min => _mpi.OpMin,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    // typeof comparisons on a generic parameter are folded by the JIT: one branch survives per instantiation.
    private IntPtr Type<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? _mpi.Float :
        typeof(T) == typeof(double) ? _mpi.Double :
        typeof(T) == typeof(int) ? _mpi.Int32 :
        typeof(T) == typeof(long) ? _mpi.Int64 :
        typeof(T) == typeof(byte) ? _mpi.UInt8 :
        typeof(T) == typeof(ushort) ? _mpi.UInt16 :
        throw new NotSupportedException($"MPI collectives of {typeof(T).Name} are not supported (float, double, int, long, byte, ushort)");
}
