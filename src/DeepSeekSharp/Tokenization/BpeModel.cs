namespace DeepSeekSharp.Tokenization;

/// <summary>
/// Byte-level BPE: a word (already mapped to byte-level characters) starts as one symbol per character and the
/// adjacent pair with the lowest merge rank is merged (leftmost first) until no merge applies, as HF's BPE does.
/// Results are cached per word, which makes natural text cheap (most pieces repeat).
/// </summary>
public sealed class BpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _idToToken;
    private readonly Dictionary<long, (int Rank, int Merged)> _merges;
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly object _cacheGate = new();

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string source)
    {
        _vocab = vocab;
        int size = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        _idToToken = new string[size];
        foreach (var (tok, id) in vocab) _idToToken[id] = tok;
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (l, r) = merges[rank];
            if (!vocab.TryGetValue(l, out int li) || !vocab.TryGetValue(r, out int ri) || !vocab.TryGetValue(l + r, out int mi))
                throw new DeepSeekSharpException($"{source}: merge #{rank} '{l} {r}' refers to tokens missing from the vocabulary");
            _merges.TryAdd(Key(li, ri), (rank, mi));
        }
        Merges = merges;
    }

    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public int Size => _idToToken.Length;

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>Appends the ids of <paramref name="word"/> (byte-level characters) to <paramref name="output"/>.</summary>
    public void Encode(string word, List<int> output)
    {
        int[]? cached;
        lock (_cacheGate) _cache.TryGetValue(word, out cached);
        if (cached is null)
        {
            cached = Merge(word);
            lock (_cacheGate) { if (_cache.Count < 1_000_000) _cache[word] = cached; }
        }
        output.AddRange(cached);
    }

    private int[] Merge(string word)
    {
        var symbols = new List<int>(word.Length);
        foreach (char c in word)
            symbols.Add(_vocab.TryGetValue(c.ToString(), out int id) ? id : throw new DeepSeekSharpException($"byte-level character U+{(int)c:X4} is not in the vocabulary"));
        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestPos = -1, bestId = -1;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (_merges.TryGetValue(Key(symbols[i], symbols[i + 1]), out var m) && m.Rank < bestRank)
                    (bestRank, bestPos, bestId) = (m.Rank, i, m.Merged);
            if (bestPos < 0) break;
            symbols[bestPos] = bestId;
            symbols.RemoveAt(bestPos + 1);
        }
        return symbols.ToArray();
    }
}
