using System.Buffers;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// A non-blocking collective in flight: it keeps the collective's buffers pinned until <see cref="Wait"/> (or a
/// <see cref="Test"/> that reports completion). Create one per overlapping operation and reuse it step after step;
/// starting a collective on a request that is still active is an error.
/// </summary>
public sealed class CollectiveRequest : IDisposable
{
    // An all-to-all-v pins six buffers: data and counts/offsets both ways.
    private readonly MemoryHandle[] _pins = new MemoryHandle[6];
    private int _pinCount;
    private IntPtr _handle;
    private MpiCommunicator? _owner;

    /// <summary>True between the start of a collective and its completion.</summary>
    public bool IsActive => _owner is not null;

    internal void ThrowIfActive()
    {
        if (IsActive) throw new InvalidOperationException("this CollectiveRequest is still in flight: Wait for it before starting another collective on it");
    }

    internal unsafe void* Pin<T>(ReadOnlyMemory<T> memory)
    {
        var pin = memory.Pin();
        _pins[_pinCount++] = pin;
        return pin.Pointer;
    }

    /// <summary>Records the started MPI request; on a failed start the caller calls <see cref="ReleasePins"/> instead.</summary>
    internal void Started(MpiCommunicator owner, IntPtr handle)
    {
        _owner = owner;
        _handle = handle;
    }

    internal void ReleasePins()
    {
        for (int i = 0; i < _pinCount; i++) _pins[i].Dispose();
        _pinCount = 0;
    }

    /// <summary>Blocks until the collective completes (at once for a world of one or an idle request).</summary>
    public void Wait()
    {
        if (_owner is not { } owner) return;
        try
        {
            owner.WaitRequest(ref _handle);
        }
        finally
        {
            _owner = null;
            ReleasePins();
        }
    }

    /// <summary>True once the collective has completed (it then no longer needs <see cref="Wait"/>); also drives MPI's progress.</summary>
    public bool Test()
    {
        if (_owner is not { } owner) return true;
        bool done;
        try
        {
            done = owner.TestRequest(ref _handle);
        }
        catch
        {
            _owner = null;
            ReleasePins();
            throw;
        }
        if (done)
        {
            _owner = null;
            ReleasePins();
        }
        return done;
    }

    /// <summary>Waits for a collective still in flight, so its buffers are never unpinned under MPI.</summary>
    public void Dispose() => Wait();
}
