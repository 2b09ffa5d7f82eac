using System.Buffers;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace DeepSeekSharp.IO;

/// <summary>
/// A whole file mapped read-only. Its pages are file-backed: the kernel reads them in on first touch and may drop
/// them again under memory pressure (they are clean), so a large checkpoint read through the mapping costs page
/// cache, not anonymous memory. <see cref="Slice"/> hands out <see cref="ReadOnlyMemory{T}"/> views that keep the
/// mapping alive: it is unmapped by <see cref="Dispose"/> only while no view was handed out, and otherwise once the
/// last view (and this object) is unreachable.
/// </summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private bool _shared;
    private int _released;

    /// <summary>Maps the first <paramref name="length"/> bytes (the file's length, checked by the caller) of <paramref name="path"/>.</summary>
    public MappedFile(string path, long length)
    {
        Path = path;
        Length = length;
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
    }

    public string Path { get; }

    public long Length { get; }

    /// <summary>The first mapped byte (valid while this object is reachable and not disposed).</summary>
    public byte* Pointer => _released == 0 ? _base : throw new ObjectDisposedException(Path);

    /// <summary>
    /// Bytes [offset, offset + length) as memory that keeps this mapping alive as long as it is referenced. Bytes have
    /// no alignment requirement, so any offset is fine. The memory is read-only: the pages are mapped without write
    /// access.
    /// </summary>
    public ReadOnlyMemory<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{Path}: bytes [{offset}, {offset + length}) lie outside the file ({Length} bytes)");
        ObjectDisposedException.ThrowIf(_released != 0, this);
        _shared = true;
        return new Region(this, offset, length).Memory;
    }

    /// <summary>Whether <paramref name="memory"/> is a view of a mapped file (not a managed array).</summary>
    public static bool IsMapped(ReadOnlyMemory<byte> memory) => MemoryMarshal.TryGetMemoryManager<byte, Region>(memory, out _);

    /// <summary>Unmaps now unless views were handed out; those keep the mapping until they are unreachable.</summary>
    public void Dispose()
    {
        if (_shared) return;
        Release();
        _view.Dispose();
        _map.Dispose();
        GC.SuppressFinalize(this);
    }

    // Unreachable with its views: give back the pointer so the view handle's own (critical, later) finalizer unmaps.
    ~MappedFile() => Release();

    private void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) _view.SafeMemoryMappedViewHandle.ReleasePointer();
    }

    /// <summary>A slice of the mapping as <see cref="Memory{T}"/>; holds the file so the pages stay mapped.</summary>
    private sealed class Region(MappedFile file, long offset, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(file.Pointer + offset, length);

        // Mapped pages never move: pinning is the address (the handle keeps this region, hence the file, reachable).
        public override MemoryHandle Pin(int elementIndex = 0)
        {
            if ((uint)elementIndex > (uint)length) throw new ArgumentOutOfRangeException(nameof(elementIndex));
            return new MemoryHandle(file.Pointer + offset + elementIndex, default, this);
        }

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }
}
