using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DeepSeekSharp.Tokenization;

/// <summary>
/// Trains a byte-level BPE tokenizer (the DeepSeek-V3 kind): texts are split with DeepSeek-V3's pre-tokenizer
/// regexes, mapped to byte-level characters and counted; starting from the 256 byte symbols, the most frequent
/// adjacent pair is merged until the vocabulary is full (ties: the pair whose merged string sorts first,
/// ordinal). Pair counts are updated incrementally, touching only the words that contain the merged pair.
/// The result is saved as a tokenizer.json that HF tokenizers loads.
/// </summary>
public static class BpeTrainer
{
    public static readonly string[] DeepSeekSplitPatterns =
    [
        @"\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ];

    public static readonly string[] DefaultSpecialTokens = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"];

    /// <summary>Trains and writes <paramref name="outputPath"/> (atomically); returns the loaded tokenizer.</summary>
    public static HfTokenizer TrainAndSave(IEnumerable<string> texts, int vocabSize, string outputPath, IReadOnlyList<string>? specialTokens = null)
    {
        specialTokens ??= DefaultSpecialTokens;
        var json = Train(texts, vocabSize, specialTokens);
        IO.AtomicFile.WriteAllText(outputPath, json);
        return HfTokenizer.Load(outputPath);
    }

    /// <summary>Returns the tokenizer.json text.</summary>
    public static string Train(IEnumerable<string> texts, int vocabSize, IReadOnlyList<string> specialTokens)
    {
        int baseSize = specialTokens.Count + 256;
        if (vocabSize < baseSize) throw new DeepSeekSharpException($"vocab size {vocabSize} is smaller than the {baseSize} special and byte tokens");
        var splits = DeepSeekSplitPatterns.Select(p => new RunePreservingRegex(p)).ToArray();

        // 1. Word frequencies (pre-tokens in byte-level characters).
        var wordCounts = new Dictionary<string, long>(StringComparer.Ordinal);
        var sb = new StringBuilder();
        foreach (var text in texts)
            foreach (var piece in PreTokenize(text, splits))
            {
                sb.Clear();
                foreach (byte b in Encoding.UTF8.GetBytes(piece)) sb.Append(ByteLevel.ByteToChar[b]);
                string w = sb.ToString();
                wordCounts[w] = wordCounts.GetValueOrDefault(w) + 1;
            }

        // 2. Symbols: ids are indices into `tokens` (0..255 = bytes); words are id sequences.
        var tokens = new List<string>(vocabSize);
        for (int b = 0; b < 256; b++) tokens.Add(ByteLevel.ByteToChar[b].ToString());
        var byteId = new Dictionary<char, int>();
        for (int b = 0; b < 256; b++) byteId[ByteLevel.ByteToChar[b]] = b;
        var words = wordCounts.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (Symbols: kv.Key.Select(c => byteId[c]).ToList(), Count: kv.Value)).ToList();

        var pairCounts = new Dictionary<(int, int), long>();
        var pairWords = new Dictionary<(int, int), HashSet<int>>();
        for (int wi = 0; wi < words.Count; wi++) AddPairs(wi, +1);

        var merges = new List<(string, string)>();
        while (tokens.Count + specialTokens.Count < vocabSize && pairCounts.Count > 0)
        {
            (int, int) best = default;
            long bestCount = 0;
            string? bestString = null;
            foreach (var (pair, count) in pairCounts)
            {
                if (count < bestCount || count <= 0) continue;
                string merged = tokens[pair.Item1] + tokens[pair.Item2];
                if (count > bestCount || string.CompareOrdinal(merged, bestString) < 0)
                    (best, bestCount, bestString) = (pair, count, merged);
            }
            if (bestCount < 1 || bestString is null) break;
            int newId = tokens.Count;
            tokens.Add(bestString);
            merges.Add((tokens[best.Item1], tokens[best.Item2]));
            foreach (int wi in pairWords[best].ToList())
            {
                AddPairs(wi, -1);
                var s = words[wi].Symbols;
                for (int i = 0; i + 1 < s.Count; i++)
                    if (s[i] == best.Item1 && s[i + 1] == best.Item2) { s[i] = newId; s.RemoveAt(i + 1); }
                AddPairs(wi, +1);
            }
        }
        return ToJson(tokens, merges, specialTokens);

        void AddPairs(int wi, int sign)
        {
            var (s, count) = words[wi];
            for (int i = 0; i + 1 < s.Count; i++)
            {
                var pair = (s[i], s[i + 1]);
                long c = pairCounts.GetValueOrDefault(pair) + sign * count;
                if (c <= 0) { pairCounts.Remove(pair); pairWords.Remove(pair); continue; }
                pairCounts[pair] = c;
                if (sign > 0)
                {
                    if (!pairWords.TryGetValue(pair, out var set)) pairWords[pair] = set = [];
                    set.Add(wi);
                }
            }
        }
    }

    /// <summary>The DeepSeek-V3 pre-tokenizer: each regex splits the pieces of the previous one (matches and gaps kept).</summary>
    public static IEnumerable<string> PreTokenize(string text, IReadOnlyList<RunePreservingRegex> splits)
    {
        var pieces = new List<string> { text };
        foreach (var split in splits)
        {
            var next = new List<string>();
            foreach (var piece in pieces)
            {
                int last = 0;
                split.Matches(piece, (s, l) =>
                {
                    if (s > last) next.Add(piece[last..s]);
                    next.Add(piece.Substring(s, l));
                    last = s + l;
                });
                if (last < piece.Length) next.Add(piece[last..]);
            }
            pieces = next;
        }
        return pieces;
    }

    private static string ToJson(List<string> tokens, List<(string, string)> merges, IReadOnlyList<string> specialTokens)
    {
        var vocab = new JsonObject();
        for (int i = 0; i < specialTokens.Count; i++) vocab[specialTokens[i]] = i;
        for (int i = 0; i < tokens.Count; i++) vocab[tokens[i]] = specialTokens.Count + i;
        var added = new JsonArray();
        for (int i = 0; i < specialTokens.Count; i++)
            added.Add(new JsonObject
            {
                ["id"] = i, ["content"] = specialTokens[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
        var pre = new JsonArray();
        foreach (var p in DeepSeekSplitPatterns)
            pre.Add(new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = p }, ["behavior"] = "Isolated", ["invert"] = false });
        pre.Add(new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false });
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = pre },
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m.Item1, m.Item2)).ToArray()),
            },
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }
}
