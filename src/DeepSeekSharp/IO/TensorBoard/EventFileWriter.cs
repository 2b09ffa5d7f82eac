using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace DeepSeekSharp.IO.TensorBoard;

/// <summary>
/// Writes TensorBoard event files (formats.md): TFRecord framing (u64 length, masked CRC-32C of the length, data,
/// masked CRC-32C of the data) around hand-encoded <c>Event</c> protobufs holding scalar summaries. A resumed run
/// continues its folder's file instead of adding a second one that would repeat the steps after its checkpoint.
/// </summary>
public sealed class EventFileWriter : IDisposable
{
    private readonly FileStream _stream;

    /// <param name="directory">the run's TensorBoard folder</param>
    /// <param name="continueAfterStep">
    /// a resumed run's checkpoint step: the folder's event files become one, holding their events up to that step
    /// (those past it were written before the previous run stopped), and new events are appended to it; null
    /// starts a new file
    /// </param>
    public EventFileWriter(string directory, long? continueAfterStep = null)
    {
        Directory.CreateDirectory(directory);
        var existing = Directory.GetFiles(directory, "events.out.tfevents.*").Order(StringComparer.Ordinal).ToArray();
        if (continueAfterStep is long keepUpTo && existing.Length > 0)
        {
            FilePath = existing[^1];
            var kept = new List<byte[]>();
            bool header = false;
            foreach (var file in existing)
                foreach (var (record, step, isHeader) in ReadRecords(File.ReadAllBytes(file)))
                    if (isHeader ? !header : step <= keepUpTo)
                    {
                        kept.Add(record);
                        header |= isHeader;
                    }
            AtomicFile.Write(FilePath, fs => kept.ForEach(r => fs.Write(r)));
            foreach (var file in existing[..^1]) File.Delete(file);
            _stream = new FileStream(FilePath, FileMode.Append, FileAccess.Write, FileShare.Read);
            return;
        }
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

    /// <summary>
    /// The framed records of an event file with each Event's step and whether it is the file_version header; reading
    /// stops at the first record that is torn or fails its checksums (the tail of a killed writer).
    /// </summary>
    internal static IEnumerable<(byte[] Record, long Step, bool IsHeader)> ReadRecords(byte[] file)
    {
        int at = 0;
        while (file.Length - at >= 16)
        {
            var span = file.AsSpan(at);
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(span);
            if (BinaryPrimitives.ReadUInt32LittleEndian(span[8..]) != MaskedCrc(span[..8]) || length > (ulong)(span.Length - 16)) yield break;
            var data = span.Slice(12, (int)length);
            if (BinaryPrimitives.ReadUInt32LittleEndian(span[(12 + (int)length)..]) != MaskedCrc(data)) yield break;
            var (step, isHeader) = ReadEventStep(data);
            yield return (span[..(16 + (int)length)].ToArray(), step, isHeader);
            at += 16 + (int)length;
        }
    }

    /// <summary>Event.step (field 2) and whether Event.file_version (field 3) is set; other fields are skipped by wire type.</summary>
    private static (long Step, bool IsHeader) ReadEventStep(ReadOnlySpan<byte> data)
    {
        long step = 0;
        bool header = false;
        int at = 0;
        while (at < data.Length)
        {
            ulong tag = ReadVarint(data, ref at);
            int field = (int)(tag >> 3);
            switch ((int)(tag & 7))
            {
                case 0:
                    ulong v = ReadVarint(data, ref at);
                    if (field == 2) step = (long)v;
                    break;
                case 1: at += 8; break;
                case 5: at += 4; break;
                case 2:
                    at += (int)ReadVarint(data, ref at);
                    if (field == 3) header = true;
                    break;
                default: return (step, header);
            }
        }
        return (step, header);
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int at)
    {
        ulong v = 0;
        for (int shift = 0; at < data.Length && shift < 64; shift += 7)
        {
            byte b = data[at++];
            v |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) break;
        }
        return v;
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
