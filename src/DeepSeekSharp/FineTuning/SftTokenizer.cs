using System.Text.Json;
using DeepSeekSharp.Tokenization;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.FineTuning;

/// <summary>
/// The tokenizer fine-tuning data is encoded with, and what its <c>tokenizer_config.json</c> says about chats: the Jinja
/// chat template, the BOS/EOS strings the template writes, and whether plain text gets a BOS (<c>add_bos_token</c>).
/// </summary>
/// <param name="Tokenizer">encodes text; special-token strings in the text become their ids</param>
/// <param name="Source">where it came from (a tokenizer.json, or "byte")</param>
/// <param name="ConfigPath">the tokenizer_config.json read, if any</param>
/// <param name="ChatTemplate">the config's <c>chat_template</c> (a string, or the one named "default" of a list)</param>
/// <param name="BosToken">the BOS string (bos_token, else the tokenizer's BOS id as text)</param>
/// <param name="EosToken">the EOS string</param>
/// <param name="AddBosToken">whether completion, alpaca and input_output text gets BOS first</param>
public sealed record SftTokenizer(ITextTokenizer Tokenizer, string Source, string? ConfigPath, string? ChatTemplate, string? BosToken, string? EosToken, bool AddBosToken)
{
    /// <summary>
    /// The run's tokenizer for fine-tuning data: <c>tokenizer:</c> when it names a file or folder; else, with
    /// <c>base_model</c>, the base model's tokenizer.json; else the built-in byte tokenizer (its BOS/EOS strings are
    /// DeepSeek's, so chat templates that write them give ids 256/257). A base_model without a tokenizer.json is an error,
    /// never a silent byte tokenizer. <c>tokenizer: bpe</c> reads the one a
    /// training run saved in output_dir.
    /// </summary>
    public static SftTokenizer FromConfig(TrainConfig cfg)
    {
        string? file = cfg.Tokenizer switch
        {
            null when cfg.BaseModel is not null => File.Exists(Path.Combine(cfg.BaseModel, "tokenizer.json")) ? Path.Combine(cfg.BaseModel, "tokenizer.json")
                : throw new DeepSeekSharpException($"base_model {cfg.BaseModel} has no tokenizer.json; give tokenizer: PATH, or tokenizer: byte"),
            null or "byte" => null,
            "bpe" => Path.Combine(cfg.OutputDir, "tokenizer.json") is var p && File.Exists(p) ? p
                : throw new DeepSeekSharpException($"tokenizer: bpe: {p} does not exist yet (a training run writes it); give tokenizer: PATH"),
            var path when Directory.Exists(path) => Path.Combine(path, "tokenizer.json"),
            var path => path,
        };
        return file is null ? Byte() : Load(file);
    }

    /// <summary>The built-in byte tokenizer, with DeepSeek's BOS/EOS strings mapped to its BOS/EOS ids.</summary>
    public static SftTokenizer Byte() => new(
        new SpecialTokenSplitter(new ByteTokenizer(), new Dictionary<string, int>
        {
            [Inference.ChatTemplate.Bos] = ByteTokenizer.Bos,
            [Inference.ChatTemplate.Eos] = ByteTokenizer.Eos,
        }),
        "byte", null, null, Inference.ChatTemplate.Bos, Inference.ChatTemplate.Eos, AddBosToken: false);

    /// <summary>An HF tokenizer.json and the tokenizer_config.json beside it (if any).</summary>
    public static SftTokenizer Load(string tokenizerFile)
    {
        var tokenizer = HfTokenizer.Load(tokenizerFile);
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerFile))!, "tokenizer_config.json");
        string? template = null, bos = null, eos = null;
        bool addBos = false;
        if (File.Exists(configPath))
        {
            try
            {
                using var doc = JsonDocument.Parse(IO.InputFile.ReadAllText(configPath, "tokenizer config"));
                var root = doc.RootElement;
                bos = TokenContent(root, "bos_token");
                eos = TokenContent(root, "eos_token");
                addBos = root.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind == JsonValueKind.True;
                if (root.TryGetProperty("chat_template", out var ct))
                    template = ct.ValueKind switch
                    {
                        JsonValueKind.String => ct.GetString(),
                        // Newer configs list named templates; "default" is the one apply_chat_template uses.
                        JsonValueKind.Array => ct.EnumerateArray().Where(t => t.TryGetProperty("name", out var n) && n.GetString() == "default")
                            .Select(t => t.GetProperty("template").GetString()).FirstOrDefault(),
                        _ => null,
                    };
            }
            catch (JsonException e) { throw new DeepSeekSharpException($"{configPath}: invalid JSON ({e.Message.Split('\n')[0]})"); }
            catch (InvalidOperationException e) { throw new DeepSeekSharpException($"{configPath}: unexpected structure ({e.Message})"); }
        }
        bos ??= tokenizer.BosId is int b ? tokenizer.IdToToken(b) : null;
        eos ??= tokenizer.EosId is int e2 ? tokenizer.IdToToken(e2) : null;
        return new SftTokenizer(tokenizer, tokenizerFile, File.Exists(configPath) ? configPath : null, template, bos, eos, addBos);
    }

    private static string? TokenContent(JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) ? c.GetString() : null;
}

/// <summary>
/// Makes a tokenizer that knows no special tokens (the byte tokenizer) read given special-token strings as their ids,
/// as HF tokenizers do with added tokens: the text is cut at them (leftmost, longest first) and the rest encoded.
/// </summary>
internal sealed class SpecialTokenSplitter(ITextTokenizer inner, IReadOnlyDictionary<string, int> specials) : ITextTokenizer
{
    private readonly (string Text, int Id)[] _specials = specials.OrderByDescending(kv => kv.Key.Length).Select(kv => (kv.Key, kv.Value)).ToArray();

    public int VocabSize => inner.VocabSize;

    public int? EosId => inner.EosId;

    public int? BosId => inner.BosId;

    public int[] Encode(string text)
    {
        var ids = new List<int>();
        int start = 0;
        for (int i = 0; i < text.Length; i++)
        {
            foreach (var (special, id) in _specials)
            {
                if (string.CompareOrdinal(text, i, special, 0, special.Length) != 0) continue;
                ids.AddRange(inner.Encode(text[start..i]));
                ids.Add(id);
                start = i + special.Length;
                i = start - 1;
                break;
            }
        }
        ids.AddRange(inner.Encode(text[start..]));
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var sb = new System.Text.StringBuilder();
        int start = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            foreach (var (special, id) in _specials)
            {
                if (ids[i] != id) continue;
                sb.Append(inner.Decode(ids[start..i])).Append(special);
                start = i + 1;
                break;
            }
        }
        return sb.Append(inner.Decode(ids[start..])).ToString();
    }
}
