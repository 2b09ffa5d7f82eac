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

    public int[] Encode(string text) => Encode(text.AsSpan());

    private static int[] Encode(ReadOnlySpan<char> text)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(text)];
        Encoding.UTF8.GetBytes(text, bytes);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    /// <summary>A megabyte of characters at a time (never between a surrogate pair), so a long document's ids are not
    /// all held at once.</summary>
    public IEnumerable<int[]> EncodeChunks(string text)
    {
        const int Window = 1 << 20;
        for (int pos = 0; pos < text.Length;)
        {
            int cut = Math.Min(text.Length, pos + Window);
            if (cut < text.Length && char.IsHighSurrogate(text[cut - 1])) cut--;
            yield return Encode(text.AsSpan(pos, cut - pos));
            pos = cut;
        }
    }

    /// <summary>
    /// Writes this tokenizer as an HF tokenizer.json (byte-level BPE with no merges; id b is the byte b, then
    /// BOS/EOS/PAD), so checkpoints trained with it carry a tokenizer any HF-style tool can load.
    /// </summary>
    public static void SaveAsHfJson(string path)
    {
        var vocab = new System.Text.Json.Nodes.JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevel.ByteToChar[b].ToString()] = b;
        string[] specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"];
        var added = new System.Text.Json.Nodes.JsonArray();
        for (int i = 0; i < specials.Length; i++)
        {
            vocab[specials[i]] = 256 + i;
            added.Add(new System.Text.Json.Nodes.JsonObject
            {
                ["id"] = 256 + i, ["content"] = specials[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
        }
        var byteLevel = new System.Text.Json.Nodes.JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false };
        var root = new System.Text.Json.Nodes.JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added, ["normalizer"] = null,
            ["pre_tokenizer"] = byteLevel.DeepClone(), ["post_processor"] = byteLevel.DeepClone(), ["decoder"] = byteLevel.DeepClone(),
            ["model"] = new System.Text.Json.Nodes.JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false, ["vocab"] = vocab, ["merges"] = new System.Text.Json.Nodes.JsonArray(),
            },
        };
        IO.AtomicFile.WriteAllText(path, root.ToJsonString(new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length);
        foreach (int id in ids) if (id is >= 0 and < 256) bytes.Add((byte)id);
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
