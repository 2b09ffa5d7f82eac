using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.SafeTensors;

/// <summary>A tensor to write: name, shape and fp32 values (converted to the file's dtype on write).</summary>
public sealed record NamedTensor(string Name, int[] Shape, ReadOnlyMemory<float> Data);

/// <summary>A tensor to write as it is: raw little-endian bytes of any dtype (e.g. FP8 codes).</summary>
public sealed record RawTensor(string Name, DType DType, int[] Shape, ReadOnlyMemory<byte> Bytes);

/// <summary>
/// Writes safetensors files: header padded with spaces to a multiple of 8, tensors in the given order,
/// atomically (temp file in the same folder, then rename), so a crash never leaves a partial file under the name.
/// </summary>
public static class SafeTensorsWriter
{
    public static void WriteFloat32(string path, IReadOnlyList<(string Name, int[] Shape, float[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t => new NamedTensor(t.Name, t.Shape, t.Data.AsMemory(0, checked((int)ShapeUtil.Numel(t.Shape))))).ToList(), DType.F32, metadata);

    /// <summary>Writes tensors whose bytes are already in their dtype (FP8 checkpoints mix F8_E4M3 and F32).</summary>
    public static void WriteRaw(string path, IReadOnlyList<RawTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        foreach (var t in tensors)
            if (t.Bytes.Length != ShapeUtil.Numel(t.Shape) * NumericFormats.SizeOf(t.DType))
                throw new ArgumentException($"'{t.Name}': {t.Bytes.Length} bytes for {t.DType} {ShapeUtil.Format(t.Shape)}");
        WriteCore(path, tensors.Select(t => (t.Name, t.DType, t.Shape, (long)t.Bytes.Length)).ToList(), metadata,
            (fs, i, _) => fs.Write(tensors[i].Bytes.Span));
    }

    /// <summary>Writes fp32 data stored as <paramref name="dtype"/> (F32, BF16 or F16).</summary>
    public static void Write(string path, IReadOnlyList<NamedTensor> tensors, DType dtype, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"cannot write fp32 data as {dtype}");
        int size = NumericFormats.SizeOf(dtype);
        foreach (var t in tensors)
            if (t.Data.Length != ShapeUtil.Numel(t.Shape)) throw new ArgumentException($"'{t.Name}': {t.Data.Length} values for shape {ShapeUtil.Format(t.Shape)}");
        WriteCore(path, tensors.Select(t => (t.Name, dtype, t.Shape, t.Data.Length * (long)size)).ToList(), metadata,
            (fs, i, buffer) => WriteData(fs, tensors[i].Data.Span, dtype, buffer));
    }

    /// <summary>
    /// Writes a file whose tensors are produced one at a time, in order, by <paramref name="writeData"/> (given the
    /// stream and the entry's index; it must write exactly the entry's bytes): a model larger than memory can be
    /// written without ever holding more than one tensor.
    /// </summary>
    public static void WriteStreamed(string path, IReadOnlyList<(string Name, DType DType, int[] Shape)> entries,
        IReadOnlyDictionary<string, string>? metadata, Action<Stream, int> writeData) =>
        WriteCore(path, entries.Select(e => (e.Name, e.DType, e.Shape, ShapeUtil.Numel(e.Shape) * NumericFormats.SizeOf(e.DType))).ToList(), metadata,
            (fs, i, _) =>
            {
                long before = fs.Position;
                writeData(fs, i);
                long expected = ShapeUtil.Numel(entries[i].Shape) * NumericFormats.SizeOf(entries[i].DType);
                if (fs.Position - before != expected)
                    throw new InvalidOperationException($"'{entries[i].Name}': {fs.Position - before} bytes written, the header says {expected}");
            });

    /// <summary>Writes fp32 values as <paramref name="dtype"/> (F32, BF16 or F16) through <paramref name="buffer"/>.</summary>
    public static void WriteValues(Stream s, ReadOnlySpan<float> data, DType dtype, byte[] buffer) => WriteData(s, data, dtype, buffer);

    private static void WriteCore(string path, List<(string Name, DType DType, int[] Shape, long Bytes)> entries,
        IReadOnlyDictionary<string, string>? metadata, Action<FileStream, int, byte[]> writeData)
    {
        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, dtype, shape, bytes) in entries)
        {
            header[name] = new { dtype = SafeTensorsDTypes.Name(dtype), shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8;
        AtomicFile.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
            fs.Write(len);
            fs.Write(json);
            for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
            var buffer = new byte[1 << 16];
            for (int i = 0; i < entries.Count; i++) writeData(fs, i, buffer);
        });
    }

    private static void WriteData(Stream s, ReadOnlySpan<float> data, DType dtype, byte[] buffer)
    {
        if (dtype == DType.F32)
        {
            s.Write(MemoryMarshal.AsBytes(data));
            return;
        }
        int per = buffer.Length / 2;
        for (int i = 0; i < data.Length; i += per)
        {
            int n = Math.Min(per, data.Length - i);
            var dst = MemoryMarshal.Cast<byte, ushort>(buffer.AsSpan(0, n * 2));
            for (int j = 0; j < n; j++)
                dst[j] = dtype == DType.BF16 ? NumericFormats.FloatToBf16(data[i + j]) : BitConverter.HalfToUInt16Bits((Half)data[i + j]);
            s.Write(buffer, 0, n * 2);
        }
    }
}
