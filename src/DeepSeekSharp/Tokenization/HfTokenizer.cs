using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> of the byte-level BPE kind (DeepSeek-V3's, GPT-2-style ones, and the ones
/// the trainer of this folder writes): added tokens cut out first (leftmost-longest), then the pre-tokenizer
/// (a sequence of regex splits and ByteLevel), then BPE; decoding maps byte-level characters back to UTF-8.
/// The file is validated once, on load: ids are integers in range and unique, merges name known tokens, added tokens
/// agree with the vocabulary, and split regexes parse (and run with a match timeout). Any problem is one line naming it.
/// </summary>
public sealed class HfTokenizer : ITextTokenizer
{
    /// <summary>The largest token id a file may use: ids index arrays, and the largest published vocabularies have about
    /// 256K tokens, so this leaves room while an id of 2^31 can no longer ask for a 16 GB table.</summary>
    public const int MaxTokenId = (1 << 24) - 1;

    /// <summary>
    /// Characters pre-tokenised at a time. A longer text is encoded window by window, each cut at a pre-tokenizer
    /// boundary, and its ids come out as they are made (<see cref="EncodeChunks"/>), so the memory of encoding one
    /// document follows this window instead of the document's length.
    /// </summary>
    public const int WindowChars = 1 << 20;

    // Pieces ending this close to a window's cut are left for the next window: a split regex's match may look at the
    // characters just after it (\s+(?!\S) looks one ahead; a run of letters ends where the next character is not one).
    private const int WindowMargin = 256;

    // Ids handed out per chunk at most (about).
    private const int ChunkIds = 1 << 16;

    /// <summary>GPT-2's split, used by a ByteLevel pre-tokenizer with <c>use_regex: true</c>.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly BpeModel _bpe;
    private readonly List<RunePreservingRegex> _splits = [];
    private readonly Dictionary<string, int> _added = new(StringComparer.Ordinal);
    private readonly Dictionary<int, (string Content, bool Special)> _addedById = [];
    private readonly Dictionary<char, List<string>> _addedByFirstChar = [];

    private HfTokenizer(BpeModel bpe) { _bpe = bpe; }

    public string? SourcePath { get; private init; }

    public int VocabSize { get; private set; }

    public int? EosId { get; private set; }

    public int? BosId { get; private set; }

    public BpeModel Model => _bpe;

    /// <summary>The window length (tests shrink it to cut short texts into many windows).</summary>
    internal int Window { get; set; } = WindowChars;

    public static HfTokenizer Load(string path)
    {
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: tokenizer file not found");
        try
        {
            using var doc = JsonDocument.Parse(IO.InputFile.ReadAllText(path, "tokenizer file"), new JsonDocumentOptions { MaxDepth = 64 });
            var t = FromJson(doc.RootElement, path);
            t.ReadSpecialIds(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "tokenizer_config.json"));
            return t;
        }
        catch (JsonException e) { throw new DeepSeekSharpException($"{path}: invalid JSON ({e.Message.Split('\n')[0]})"); }
        catch (InvalidOperationException e) { throw new DeepSeekSharpException($"{path}: unexpected structure ({e.Message})"); }
        catch (KeyNotFoundException e) { throw new DeepSeekSharpException($"{path}: missing field ({e.Message})"); }
    }

    private static HfTokenizer FromJson(JsonElement root, string path)
    {
        var model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out var ty) ? ty.GetString() ?? "" : "BPE";
        if (type != "BPE") throw new DeepSeekSharpException($"{path}: model type '{type}' is not supported (byte-level BPE only)");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var tokenOfId = new Dictionary<int, string>();
        foreach (var p in model.GetProperty("vocab").EnumerateObject())
        {
            int id = TokenId(p.Value, path, $"vocab entry '{p.Name}'");
            if (!vocab.TryAdd(p.Name, id)) throw new DeepSeekSharpException($"{path}: the vocab lists '{p.Name}' twice");
            if (!tokenOfId.TryAdd(id, p.Name)) throw new DeepSeekSharpException($"{path}: vocab entries '{tokenOfId[id]}' and '{p.Name}' share id {id}");
        }
        var merges = new List<(string, string)>();
        foreach (var m in model.GetProperty("merges").EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.String)
            {
                string s = m.GetString()!;
                int sp = s.Length > 1 ? s.IndexOf(' ', 1) : -1;
                if (sp <= 0) throw new DeepSeekSharpException($"{path}: merge '{s}' is not 'left right'");
                merges.Add((s[..sp], s[(sp + 1)..]));
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                merges.Add((m[0].GetString()!, m[1].GetString()!));
            else throw new DeepSeekSharpException($"{path}: merge {m.GetRawText()} is neither 'left right' nor [left, right]");
        }
        var t = new HfTokenizer(new BpeModel(vocab, merges, path)) { SourcePath = path };
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object)
        {
            string nt = norm.GetProperty("type").GetString()!;
            if (!(nt == "Sequence" && norm.GetProperty("normalizers").GetArrayLength() == 0))
                throw new DeepSeekSharpException($"{path}: normalizer '{nt}' is not supported");
        }
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object) t.AddPreTokenizer(pre, path);
        int maxId = vocab.Count == 0 ? -1 : vocab.Values.Max();
        if (root.TryGetProperty("added_tokens", out var added))
            foreach (var a in added.EnumerateArray())
            {
                string content = a.GetProperty("content").GetString() ?? "";
                if (content.Length == 0) throw new DeepSeekSharpException($"{path}: an added token has no content");
                int id = TokenId(a.GetProperty("id"), path, $"added token '{content}'");
                bool special = a.TryGetProperty("special", out var sp) && sp.GetBoolean();
                if (vocab.TryGetValue(content, out int vocabId) && vocabId != id)
                    throw new DeepSeekSharpException($"{path}: added token '{content}' has id {id}, the vocab gives it {vocabId}");
                if (tokenOfId.TryGetValue(id, out var owner) && owner != content)
                    throw new DeepSeekSharpException($"{path}: added token '{content}' has id {id}, which is '{owner}''s");
                if (!t._added.TryAdd(content, id)) throw new DeepSeekSharpException($"{path}: added token '{content}' is listed twice");
                tokenOfId[id] = content;
                t._addedById[id] = (content, special);
                if (content.Length > 0)
                {
                    if (!t._addedByFirstChar.TryGetValue(content[0], out var list)) t._addedByFirstChar[content[0]] = list = [];
                    list.Add(content);
                }
                maxId = Math.Max(maxId, id);
            }
        foreach (var list in t._addedByFirstChar.Values) list.Sort((x, y) => y.Length.CompareTo(x.Length)); // longest first
        t.VocabSize = maxId + 1;
        return t;
    }

    private static int TokenId(JsonElement value, string path, string what) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int id) && id is >= 0 and <= MaxTokenId ? id
            : throw new DeepSeekSharpException($"{path}: {what} has id {value.GetRawText()}, not an integer in [0, {MaxTokenId}]");

    private void AddPreTokenizer(JsonElement pre, string path)
    {
        string type = pre.GetProperty("type").GetString()!;
        switch (type)
        {
            case "Sequence":
                foreach (var p in pre.GetProperty("pretokenizers").EnumerateArray()) AddPreTokenizer(p, path);
                break;
            case "Split":
                string behavior = pre.TryGetProperty("behavior", out var b) ? b.GetString()! : "Isolated";
                bool invert = pre.TryGetProperty("invert", out var inv) && inv.GetBoolean();
                if (behavior != "Isolated" || invert) throw new DeepSeekSharpException($"{path}: Split behavior '{behavior}' (invert {invert}) is not supported");
                var pattern = pre.GetProperty("pattern");
                string regex = pattern.TryGetProperty("Regex", out var r) ? r.GetString()! : System.Text.RegularExpressions.Regex.Escape(pattern.GetProperty("String").GetString()!);
                _splits.Add(new RunePreservingRegex(regex, path));
                break;
            case "ByteLevel":
                if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.GetBoolean())
                    throw new DeepSeekSharpException($"{path}: ByteLevel add_prefix_space = true is not supported");
                if (!pre.TryGetProperty("use_regex", out var ur) || ur.GetBoolean()) _splits.Add(new RunePreservingRegex(Gpt2Pattern, path));
                break;
            default:
                throw new DeepSeekSharpException($"{path}: pre-tokenizer '{type}' is not supported");
        }
    }

    private void ReadSpecialIds(string configPath)
    {
        string? bos = null, eos = null;
        if (File.Exists(configPath))
        {
            try
            {
                using var doc = JsonDocument.Parse(IO.InputFile.ReadAllText(configPath));
                bos = TokenContent(doc.RootElement, "bos_token");
                eos = TokenContent(doc.RootElement, "eos_token");
            }
            catch (JsonException e) { throw new DeepSeekSharpException($"{configPath}: invalid JSON ({e.Message.Split('\n')[0]})"); }
        }
        // Without a tokenizer_config.json, fall back to the conventional names of the DeepSeek and GPT families.
        BosId = Find(bos, "<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>");
        EosId = Find(eos, "<｜end▁of▁sentence｜>", "<|endoftext|>", "</s>");
    }

    private static string? TokenContent(JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) ? c.GetString() : null;

    private int? Find(params string?[] candidates)
    {
        foreach (var c in candidates)
            if (c is not null && (_added.TryGetValue(c, out int id) || _bpe.Vocab.TryGetValue(c, out id))) return id;
        return null;
    }

    public int? TokenToId(string token) => _added.TryGetValue(token, out int id) || _bpe.Vocab.TryGetValue(token, out id) ? id : null;

    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var a) ? a.Content : _bpe.IdToToken(id);

    /// <summary>Token ids of <paramref name="text"/>; added tokens (e.g. &lt;｜User｜&gt;) in the text are recognised.</summary>
    public int[] Encode(string text)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        foreach (var chunk in EncodeChunks(text)) ids.AddRange(chunk);
        return ids.ToArray();
    }

    /// <summary>
    /// The ids of <see cref="Encode"/> in consecutive chunks, made as the text is walked: ordinary text between added
    /// tokens is pre-tokenised <see cref="Window"/> characters at a time, so a long document's memory is its own
    /// length plus one window, not a multiple of its length.
    /// </summary>
    public IEnumerable<int[]> EncodeChunks(string text)
    {
        var ids = new List<int>(Math.Min(text.Length / 3 + 4, ChunkIds + 1024));
        int start = 0;
        while (true)
        {
            int at = start;
            string? match = null;
            if (_addedByFirstChar.Count > 0)
                for (; at < text.Length; at++)
                    if ((match = MatchAdded(text, at)) is not null) break;
            at = match is null ? text.Length : at;
            for (int pos = start; pos < at;)
            {
                pos = EncodeWindow(text, pos, at, ids);
                if (ids.Count >= ChunkIds)
                {
                    yield return ids.ToArray();
                    ids.Clear();
                }
            }
            if (match is null) break;
            ids.Add(_added[match]);
            start = at + match.Length;
        }
        if (ids.Count > 0) yield return ids.ToArray();
    }

    private string? MatchAdded(string text, int i)
    {
        if (!_addedByFirstChar.TryGetValue(text[i], out var candidates)) return null;
        foreach (var c in candidates)
            if (string.CompareOrdinal(text, i, c, 0, c.Length) == 0) return c;
        return null;
    }

    /// <summary>
    /// Encodes ordinary text from <paramref name="pos"/> up to at most one window before <paramref name="end"/> and
    /// returns where it stopped. Unless the window reaches <paramref name="end"/>, it stops at the start of the first
    /// piece that ends within the margin of the cut (that piece might continue past it), so every piece it encodes is
    /// the piece the whole text would give.
    /// </summary>
    private int EncodeWindow(string text, int pos, int end, List<int> ids)
    {
        int cut = end - pos <= Window ? end : pos + Window;
        if (cut < end && char.IsHighSurrogate(text[cut - 1]) && cut - 1 > pos) cut--; // never between a surrogate pair
        string window = text.Substring(pos, cut - pos);
        var pieces = PreTokenize(window);
        int take = pieces.Count;
        if (cut < end)
        {
            int limit = window.Length - Math.Min(WindowMargin, Window / 4);
            take = 0;
            while (take < pieces.Count && pieces[take].Start + pieces[take].Length <= limit) take++;
            // One piece nearly as long as the window (a run of letters a megabyte long): cut it at the window.
            if (take == 0) take = Math.Max(1, pieces.Count - 1);
        }
        var sb = new StringBuilder();
        Span<byte> buffer = stackalloc byte[256];
        for (int k = 0; k < take; k++)
        {
            var (ps, pl) = pieces[k];
            sb.Clear();
            var span = window.AsSpan(ps, pl);
            int byteCount = Encoding.UTF8.GetByteCount(span);
            Span<byte> bytes = byteCount <= buffer.Length ? buffer[..byteCount] : new byte[byteCount];
            Encoding.UTF8.GetBytes(span, bytes);
            foreach (byte b in bytes) sb.Append(ByteLevel.ByteToChar[b]);
            _bpe.Encode(sb.ToString(), ids);
        }
        return take == pieces.Count ? cut : pos + pieces[take].Start;
    }

    /// <summary>The pre-tokenizer's pieces of <paramref name="segment"/> as (start, length): every split regex in turn,
    /// the gaps between matches kept as pieces (HF's Split with behavior Isolated).</summary>
    private List<(int Start, int Length)> PreTokenize(string segment)
    {
        var pieces = new List<(int Start, int Length)> { (0, segment.Length) };
        foreach (var split in _splits)
        {
            var next = new List<(int, int)>(pieces.Count * 2);
            foreach (var (ps, pl) in pieces)
            {
                string piece = pieces.Count == 1 ? segment : segment.Substring(ps, pl);
                int last = 0;
                split.Matches(piece, (ms, ml) =>
                {
                    if (ms > last) next.Add((ps + last, ms - last)); // the gap between matches is a piece too
                    next.Add((ps + ms, ml));
                    last = ms + ml;
                });
                if (last < pl) next.Add((ps + last, pl - last));
            }
            pieces = next;
        }
        return pieces;
    }

    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, skipSpecialTokens: false);

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        var result = new StringBuilder();
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            result.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var a))
            {
                if (skipSpecialTokens && a.Special) continue;
                Flush();
                result.Append(a.Content);
                continue;
            }
            string? tok = _bpe.IdToToken(id);
            if (tok is null) continue;
            foreach (char c in tok)
                if (ByteLevel.TryGetByte(c, out byte b)) bytes.Add(b);
        }
        Flush();
        return result.ToString();
    }
}
