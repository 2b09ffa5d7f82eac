using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using DeepSeekSharp.IO;

namespace DeepSeekSharp.Data;

/// <summary>
/// Dataset text, read strictly: bytes that are not UTF-8, and JSON string escapes of unpaired surrogates
/// (<c>"\ud800"</c>), are errors naming the file and line, never replaced by U+FFFD (silently training on damaged text)
/// nor left to crash the tokenizer. Every reader of text and JSON-lines input goes through here, after
/// <see cref="InputFile.RequireRegular"/>.
/// </summary>
public static class Utf8Text
{
    // A line buffer that grew past this for one long line is given back before the next line is read.
    private const int LineBufferBytes = 1 << 16;

    /// <summary>A whole text file; invalid UTF-8 names its line and column.</summary>
    public static string ReadAll(string path, string what = "dataset file")
    {
        InputFile.RequireRegular(path, what);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new DeepSeekSharpException($"{path}: cannot read ({e.Message})"); }
        var span = bytes.AsSpan();
        if (span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) span = span[3..];
        if (!Utf8.IsValid(span))
        {
            int bad = FirstInvalidByte(span);
            int line = span[..bad].Count((byte)'\n') + 1;
            int column = bad - (span[..bad].LastIndexOf((byte)'\n') + 1) + 1;
            throw new DeepSeekSharpException($"{path}:{line}: invalid UTF-8 (byte 0x{span[bad]:X2} at column {column})");
        }
        return Encoding.UTF8.GetString(span);
    }

    /// <summary>
    /// The non-blank lines of a JSON-lines file, each parsed and handed to <paramref name="convert"/> with its 1-based
    /// line number. Lines are read as bytes, so a line is never held as more than its bytes and its parse, and a long
    /// line's buffer is released before the converted result is handed on.
    /// </summary>
    public static IEnumerable<T> JsonLines<T>(string path, Func<JsonElement, int, T> convert, string what = "dataset file")
    {
        InputFile.RequireRegular(path, what);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        byte[] buffer = new byte[LineBufferBytes];
        int start = 0, end = 0, number = 0;
        bool eof = false;
        while (true)
        {
            int newline = buffer.AsSpan(start, end - start).IndexOf((byte)'\n');
            if (newline < 0 && !eof)
            {
                // Move the partial line to the front, grow if it fills the buffer, and read more.
                if (start > 0)
                {
                    Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                    (end, start) = (end - start, 0);
                }
                if (end == buffer.Length)
                {
                    if (buffer.Length == Array.MaxLength) throw new DeepSeekSharpException($"{path}:{number + 1}: line longer than {Array.MaxLength:N0} bytes");
                    Array.Resize(ref buffer, buffer.Length >= Array.MaxLength / 2 ? Array.MaxLength : buffer.Length * 2);
                }
                int read = stream.Read(buffer, end, buffer.Length - end);
                if (read == 0) eof = true;
                end += read;
                continue;
            }
            if (newline < 0 && start == end) yield break;
            int length = newline < 0 ? end - start : newline;
            number++;
            var line = buffer.AsMemory(start, length);
            start += newline < 0 ? length : length + 1;
            if (number == 1 && line.Span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) line = line[3..];
            if (IsBlank(line.Span)) continue;
            T item = Parse(line, path, number, convert);
            if (buffer.Length > LineBufferBytes && end - start <= LineBufferBytes)
            {
                // One long line made the buffer large: keep only what is left of the next lines.
                var small = new byte[LineBufferBytes];
                Buffer.BlockCopy(buffer, start, small, 0, end - start);
                (buffer, end, start) = (small, end - start, 0);
            }
            yield return item;
        }
    }

    /// <summary>A string field of a JSON-lines record; an unpaired surrogate escape is an error naming the line.</summary>
    public static string GetString(JsonElement value, string path, int line, string key)
    {
        try { return value.GetString() ?? ""; }
        catch (InvalidOperationException)
        {
            throw new DeepSeekSharpException($"{path}:{line}: field '{key}' holds an unpaired surrogate escape (e.g. \"\\ud800\"), not valid Unicode text");
        }
    }

    private static T Parse<T>(ReadOnlyMemory<byte> line, string path, int number, Func<JsonElement, int, T> convert)
    {
        var bytes = line.Span;
        if (bytes[^1] == (byte)'\r') line = line[..^1];
        if (!Utf8.IsValid(line.Span))
        {
            int bad = FirstInvalidByte(line.Span);
            throw new DeepSeekSharpException($"{path}:{number}: invalid UTF-8 (byte 0x{line.Span[bad]:X2} at column {bad + 1})");
        }
        try
        {
            using var doc = JsonDocument.Parse(line);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new DeepSeekSharpException($"{path}:{number}: expected a JSON object");
            return convert(doc.RootElement, number);
        }
        catch (JsonException e)
        {
            throw new DeepSeekSharpException($"{path}:{number}: invalid JSON ({e.Message.Split('\n')[0]})");
        }
    }

    private static bool IsBlank(ReadOnlySpan<byte> line) => line.IndexOfAnyExcept((byte)' ', (byte)'\t', (byte)'\r') < 0;

    private static int FirstInvalidByte(ReadOnlySpan<byte> bytes)
    {
        for (int i = 0; i < bytes.Length;)
        {
            if (Rune.DecodeFromUtf8(bytes[i..], out _, out int consumed) != System.Buffers.OperationStatus.Done) return i;
            i += consumed;
        }
        return bytes.Length;
    }
}
