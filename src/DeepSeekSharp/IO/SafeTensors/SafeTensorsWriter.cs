using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.SafeTensors;

/// <summary>A tensor to write: name, shape and fp32 values (converted to the file's dtype on write).</summary>
public sealed record NamedTensor(string Name, int[] Shape, ReadOnlyMemory<float> Data);

/// <summary>
/// Writes safetensors files: header padded with spaces to a multiple of 8, tensors in the given order,
/// atomically (temp file in the same folder, then rename), so a crash never leaves a partial file under the name.
/// </summary>
public static class SafeTensorsWriter
{
    public static void WriteFloat32(string path, IReadOnlyList<(string Name, int[] Shape, float[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t => new NamedTensor(t.Name, t.Shape, t.Data.AsMemory(0, checked((int)ShapeUtil.Numel(t.Shape))))).ToList(), DType.F32, metadata);

    /// <summary>Writes fp32 data stored as <paramref name="dtype"/> (F32, BF16 or F16).</summary>
    public static void Write(string path, IReadOnlyList<NamedTensor> tensors, DType dtype, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"cannot write fp32 data as {dtype}");
        int size = NumericFormats.SizeOf(dtype);
        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var t in tensors)
        {
            long bytes = ShapeUtil.Numel(t.Shape) * size;
            if (t.Data.Length != ShapeUtil.Numel(t.Shape)) throw new ArgumentException($"'{t.Name}': {t.Data.Length} values for shape {ShapeUtil.Format(t.Shape)}");
            header[t.Name] = new { dtype = SafeTensorsDTypes.Name(dtype), shape = t.Shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8;
        string tmp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileName(path)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
                fs.Write(len);
                fs.Write(json);
                for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
                var buffer = new byte[1 << 16];
                foreach (var t in tensors) WriteData(fs, t.Data.Span, dtype, buffer);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
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
