using System.Text;

namespace DeepSeekSharp.Tokenization;

/// <summary>
/// The built-in tokenizer that needs no file: one id per UTF-8 byte (0–255) plus BOS (256), EOS (257) and
/// PAD (258). On ASCII text one token is one character, so its loss is directly nats per character.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    public const int Bos = 256, Eos = 257, Pad = 258;

    public int VocabSize => 259;

    public int? EosId => Eos;

    public int? BosId => Bos;

    public int[] Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length);
        foreach (int id in ids) if (id is >= 0 and < 256) bytes.Add((byte)id);
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
