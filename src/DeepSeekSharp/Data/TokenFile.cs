using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace DeepSeekSharp.Data;

/// <summary>
/// A pre-tokenised shard: flat little-endian uint16 or uint32 token ids (nanoGPT's <c>.bin</c>), memory-mapped so
/// corpora larger than memory are read by the OS page cache, not loaded.
/// </summary>
public sealed unsafe class TokenFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _ptr;

    private TokenFile(string path, int bytesPerToken)
    {
        Path = path;
        BytesPerToken = bytesPerToken;
        long length = IO.InputFile.RequireRegular(path, "token file");
        if (length % bytesPerToken != 0)
            throw new DeepSeekSharpException($"{path}: size {length} is not a multiple of {bytesPerToken} (uint{bytesPerToken * 8} tokens)");
        Count = length / bytesPerToken;
        if (length == 0) return;
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _ptr = p + _view.PointerOffset;
    }

    public static TokenFile Open(string path, int bytesPerToken)
    {
        if (bytesPerToken is not (2 or 4)) throw new ArgumentOutOfRangeException(nameof(bytesPerToken), "uint16 or uint32 tokens");
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: token file not found");
        return new TokenFile(path, bytesPerToken);
    }

    public string Path { get; }

    public int BytesPerToken { get; }

    /// <summary>Number of tokens.</summary>
    public long Count { get; }

    /// <summary>Copies tokens [start, start + destination.Length) into <paramref name="destination"/>.</summary>
    public void Read(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Count) throw new ArgumentOutOfRangeException(nameof(start));
        if (BytesPerToken == 4)
            new ReadOnlySpan<int>(_ptr + start * 4, destination.Length).CopyTo(destination);
        else
        {
            var src = new ReadOnlySpan<ushort>(_ptr + start * 2, destination.Length);
            for (int i = 0; i < src.Length; i++) destination[i] = src[i];
        }
    }

    /// <summary>Writes ids as uint16 (when every id fits) or uint32, atomically (temp file + rename).</summary>
    public static void Write(string path, IEnumerable<int[]> chunks, int bytesPerToken)
    {
        IO.AtomicFile.Write(path, fs =>
        {
            foreach (var chunk in chunks)
            {
                if (bytesPerToken == 4) fs.Write(MemoryMarshal.AsBytes(chunk.AsSpan()));
                else
                {
                    var narrow = new ushort[chunk.Length];
                    for (int i = 0; i < chunk.Length; i++)
                        narrow[i] = chunk[i] is >= 0 and <= ushort.MaxValue ? (ushort)chunk[i]
                            : throw new DeepSeekSharpException($"{path}: token id {chunk[i]} does not fit uint16");
                    fs.Write(MemoryMarshal.AsBytes(narrow.AsSpan()));
                }
            }
        });
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}
