using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.SafeTensors;

/// <summary>
/// A memory-mapped safetensors file (formats.md). The header is never trusted: its length, every dtype, shape
/// and offset are checked against each other and the file length before any tensor byte is read, and tensors must
/// not overlap. Any problem is a <see cref="SafeTensorsFormatException"/> naming the file.
/// </summary>
public sealed unsafe class SafeTensorsReader : IDisposable
{
    /// <summary>Headers larger than this are refused (real ones are well under 10 MB).</summary>
    public const long MaxHeaderBytes = 100L << 20;

    private readonly MappedFile _file;
    private readonly byte* _base;
    private readonly long _dataStart;
    private readonly Dictionary<string, TensorEntry> _byName;

    private SafeTensorsReader(string path)
    {
        FilePath = path;
        string name = Path.GetFileName(path);
        long length;
        // The target's length (a hub cache's model.safetensors is a link into blobs/), and never a FIFO or device.
        try { length = InputFile.RequireRegular(path, "safetensors file"); }
        catch (IOException e) { throw new SafeTensorsFormatException($"{path}: cannot read ({e.Message})"); }
        if (length < 8) throw Bad($"file is {length} bytes, shorter than the 8-byte header length");
        byte[] headerBytes;
        ulong n;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            Span<byte> prefix = stackalloc byte[8];
            fs.ReadExactly(prefix);
            n = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (n == 0 || n > (ulong)MaxHeaderBytes) throw Bad($"header length {n} is invalid");
            if ((long)n > length - 8) throw Bad($"header length {n} exceeds the file size {length} (truncated file?)");
            headerBytes = new byte[(int)n];
            fs.ReadExactly(headerBytes);
        }
        _dataStart = 8 + (long)n;
        long dataLength = length - _dataStart;
        var entries = ParseHeader(headerBytes, dataLength, out var metadata);
        Metadata = metadata;
        Tensors = entries;
        _byName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
        _file = new MappedFile(path, length);
        _base = _file.Pointer;
        _ = name;
    }

    public static SafeTensorsReader Open(string path)
    {
        if (!File.Exists(path)) throw new SafeTensorsFormatException($"{path}: file not found");
        return new SafeTensorsReader(path);
    }

    public string FilePath { get; }

    public IReadOnlyList<TensorEntry> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public bool TryGet(string name, out TensorEntry entry) => _byName.TryGetValue(name, out entry!);

    public TensorEntry Get(string name) =>
        _byName.TryGetValue(name, out var e) ? e : throw new DeepSeekSharpException($"{FilePath}: no tensor named '{name}'");

    /// <summary>The raw bytes of a tensor (valid while this reader is not disposed).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorEntry entry) => new(_base + _dataStart + entry.Offset, checked((int)entry.ByteLength));

    /// <summary>
    /// The bytes of a tensor as memory backed by the file mapping, not copied: the pages stay file-backed (the
    /// kernel may evict and re-read them) and the mapping lives as long as the returned memory, after this reader is
    /// disposed too.
    /// </summary>
    public ReadOnlyMemory<byte> MapBytes(TensorEntry entry) => _file.Slice(_dataStart + entry.Offset, checked((int)entry.ByteLength));

    /// <summary>Converts a floating-point tensor to fp32 into <paramref name="destination"/>.</summary>
    public void ReadAsFloat32(string name, Span<float> destination)
    {
        var e = Get(name);
        if (destination.Length != e.ElementCount) throw new ArgumentException($"'{name}' has {e.ElementCount} elements, destination {destination.Length}");
        if (e.DType is DType.I64 or DType.I32 or DType.I16 or DType.I8 or DType.U8 or DType.Bool)
            throw new DeepSeekSharpException($"{FilePath}: tensor '{name}' is {e.DType}, not floating point");
        NumericFormats.ToFloat32(e.DType, GetBytes(e), destination);
    }

    public float[] ReadFloat32(string name)
    {
        var e = Get(name);
        var data = new float[checked((int)e.ElementCount)];
        ReadAsFloat32(name, data);
        return data;
    }

    public long[] ReadInt64(string name)
    {
        var e = Get(name);
        var bytes = GetBytes(e);
        return e.DType switch
        {
            DType.I64 => MemoryMarshal.Cast<byte, long>(bytes).ToArray(),
            DType.I32 => MemoryMarshal.Cast<byte, int>(bytes).ToArray().Select(v => (long)v).ToArray(),
            _ => throw new DeepSeekSharpException($"{FilePath}: tensor '{name}' is {e.DType}, not an integer type"),
        };
    }

    private SafeTensorsFormatException Bad(string problem) => new($"{FilePath}: {problem}");

    private List<TensorEntry> ParseHeader(byte[] header, long dataLength, out Dictionary<string, string> metadata)
    {
        metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        JsonDocument doc;
        try
        {
            string text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header);
            doc = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException or ArgumentException)
        {
            throw Bad($"header is not valid UTF-8 JSON ({e.Message.Split('\n')[0]})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("header is not a JSON object");
            var entries = new List<TensorEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw Bad($"tensor '{prop.Name}' appears twice in the header");
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad("__metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad($"__metadata__ value '{m.Name}' is not a string");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                entries.Add(ParseEntry(prop.Name, prop.Value, dataLength));
            }
            // Tensors must not overlap (sorting by offset makes that one pass).
            var sorted = entries.Where(e => e.ByteLength > 0).OrderBy(e => e.Offset).ToList();
            for (int i = 1; i < sorted.Count; i++)
                if (sorted[i].Offset < sorted[i - 1].Offset + sorted[i - 1].ByteLength)
                    throw Bad($"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap");
            return entries;
        }
    }

    private TensorEntry ParseEntry(string name, JsonElement v, long dataLength)
    {
        if (v.ValueKind != JsonValueKind.Object) throw Bad($"entry '{name}' is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad($"tensor '{name}' has no dtype");
        if (!SafeTensorsDTypes.TryParse(dt.GetString()!, out var dtype)) throw Bad($"tensor '{name}' has unknown dtype '{dt.GetString()}'");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad($"tensor '{name}' has no shape");
        var shape = new List<int>();
        long count = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0 || dim > int.MaxValue)
                throw Bad($"tensor '{name}' has an invalid dimension {d.GetRawText()}");
            shape.Add((int)dim);
            if (count > 0 && dim > 0 && count > long.MaxValue / 8 / dim) throw Bad($"tensor '{name}' shape is too large");
            count *= dim;
        }
        if (shape.Count > 8) throw Bad($"tensor '{name}' has {shape.Count} dimensions");
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad($"tensor '{name}' has no [begin, end] data_offsets");
        if (!off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Bad($"tensor '{name}' has invalid data_offsets");
        if (end > dataLength) throw Bad($"tensor '{name}' data_offsets [{begin}, {end}] run past the data region ({dataLength} bytes; truncated file?)");
        long bytes = count * NumericFormats.SizeOf(dtype);
        if (end - begin != bytes)
            throw Bad($"tensor '{name}' data_offsets [{begin}, {end}] do not match shape {ShapeUtil.Format(shape.ToArray())} of {dt.GetString()} ({bytes} bytes)");
        if (bytes > int.MaxValue) throw Bad($"tensor '{name}' is larger than 2 GiB");
        return new TensorEntry(name, dtype, shape.ToArray(), begin, bytes);
    }

    /// <summary>Unmaps the file, unless <see cref="MapBytes"/> handed out views: those keep it mapped while referenced.</summary>
    public void Dispose() => _file.Dispose();
}
