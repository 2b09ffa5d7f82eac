using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace DeepSeekSharp.IO.TensorBoard;

/// <summary>
/// Writes TensorBoard event files (formats.md): TFRecord framing (u64 length, masked CRC-32C of the length, data,
/// masked CRC-32C of the data) around hand-encoded <c>Event</c> protobufs holding scalar summaries.
/// </summary>
public sealed class EventFileWriter : IDisposable
{
    private readonly FileStream _stream;

    public EventFileWriter(string directory)
    {
        Directory.CreateDirectory(directory);
        long unix = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        FilePath = Path.Combine(directory, $"events.out.tfevents.{unix}.{Environment.MachineName}");
        _stream = new FileStream(FilePath, FileMode.Append, FileAccess.Write, FileShare.Read);
        var first = new ProtoWriter();
        first.Double(1, WallTime());
        first.String(3, "brain.Event:2");
        WriteRecord(first.ToArray());
    }

    public string FilePath { get; }

    public void Scalar(string tag, float value, long step)
    {
        var v = new ProtoWriter();
        v.String(1, tag);
        v.Float(2, value);
        var summary = new ProtoWriter();
        summary.Message(1, v.ToArray());
        var ev = new ProtoWriter();
        ev.Double(1, WallTime());
        ev.Varint(2, (ulong)step);
        ev.Message(5, summary.ToArray());
        WriteRecord(ev.ToArray());
    }

    public void Flush() => _stream.Flush();

    public void Dispose() => _stream.Dispose();

    private static double WallTime() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    private void WriteRecord(byte[] data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], MaskedCrc(header[..8]));
        _stream.Write(header);
        _stream.Write(data);
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc(data));
        _stream.Write(footer);
    }

    /// <summary>TFRecord masked CRC-32C: ((c &gt;&gt; 15) | (c &lt;&lt; 17)) + 0xA282EAD8.</summary>
    public static uint MaskedCrc(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        crc = ~crc;
        return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
    }

    /// <summary>Just enough protobuf wire format for Event/Summary/Value.</summary>
    private sealed class ProtoWriter
    {
        private readonly MemoryStream _ms = new();

        public void Varint(int field, ulong value) { Tag(field, 0); Raw(value); }

        public void Double(int field, double value)
        {
            Tag(field, 1);
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteDoubleLittleEndian(b, value);
            _ms.Write(b);
        }

        public void Float(int field, float value)
        {
            Tag(field, 5);
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, value);
            _ms.Write(b);
        }

        public void String(int field, string value) => Message(field, Encoding.UTF8.GetBytes(value));

        public void Message(int field, byte[] bytes)
        {
            Tag(field, 2);
            Raw((ulong)bytes.Length);
            _ms.Write(bytes);
        }

        public byte[] ToArray() => _ms.ToArray();

        private void Tag(int field, int wire) => Raw((ulong)(field << 3 | wire));

        private void Raw(ulong v)
        {
            while (v >= 0x80) { _ms.WriteByte((byte)(v | 0x80)); v >>= 7; }
            _ms.WriteByte((byte)v);
        }
    }
}
