namespace DeepSeekSharp.Tokenization;

/// <summary>
/// GPT-2's byte-to-unicode table used by byte-level BPE: printable bytes map to themselves, the other 68 bytes to
/// U+0100 onwards, so every byte sequence becomes a string of visible characters.
/// </summary>
public static class ByteLevel
{
    public static readonly char[] ByteToChar = Build();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, (byte)b)).ToDictionary(x => x.c, x => x.Item2);

    private static char[] Build()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    public static bool TryGetByte(char c, out byte b) => CharToByte.TryGetValue(c, out b);
}
