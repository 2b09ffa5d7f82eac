using System.Text.Json.Nodes;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Tokenization;

/// <summary>
/// tokenizer.json is validated once, on load: each broken file below is one line naming it, through the real CLI entry
/// point, in bounded time and memory; a regex that backtracks catastrophically stops at the match timeout; and long
/// texts are encoded window by window with exactly the ids of encoding them whole.
/// </summary>
[Collection(nameof(InProcessDss))]
public sealed class TokenizerValidationTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); } // the test-end hook may have removed it

    /// <summary>The built-in byte tokenizer's HF form, with a Split pre-tokenizer in front of its ByteLevel.</summary>
    private JsonObject ValidTokenizer(string splitRegex = @"\s+|\w+")
    {
        string path = Path.Combine(_dir, "base.json");
        ByteTokenizer.SaveAsHfJson(path);
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        root["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = splitRegex }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false }),
        };
        return root;
    }

    private static JsonObject Vocab(JsonObject t) => t["model"]!["vocab"]!.AsObject();

    private static JsonObject FirstAdded(JsonObject t) => t["added_tokens"]![0]!.AsObject();

    private static void AddToken(JsonObject t, string content, int id) =>
        t["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = id, ["content"] = content, ["special"] = true });

    private static readonly Dictionary<string, (Action<JsonObject> Break, string Expected)> Cases = new()
    {
        ["regex that does not parse"] = (t => t["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(?<name", "does not parse"),
        ["negative vocab id"] = (t => Vocab(t)["a"] = -5, "-5"),
        ["vocab id past 2^31"] = (t => Vocab(t)["a"] = 3_000_000_000L, "3000000000"),
        ["vocab id past the id limit"] = (t => Vocab(t)["a"] = 20_000_000, "20000000"),
        ["fractional vocab id"] = (t => Vocab(t)["a"] = 1.5, "1.5"),
        ["two tokens sharing an id"] = (t => Vocab(t)["a"] = 98, "share id 98"),
        ["merge of unknown tokens"] = (t => t["model"]!["merges"] = new JsonArray("zz yy"), "merge #0"),
        ["merge that is not a pair"] = (t => t["model"]!["merges"] = new JsonArray(new JsonArray("a")), "neither"),
        ["negative added token id"] = (t => FirstAdded(t)["id"] = -1, "-1"),
        ["added token id past 2^31"] = (t => FirstAdded(t)["id"] = 2_147_483_648L, "2147483648"),
        ["added token taking a vocab token's id"] = (t => AddToken(t, "<new>", 97), "'a'"),
        ["added token contradicting the vocab"] = (t => Vocab(t)["<｜▁pad▁｜>"] = 300, "the vocab gives it 300"),
        ["added token listed twice"] = (t => AddToken(t, "<｜▁pad▁｜>", 258), "twice"),
        ["added token without content"] = (t => FirstAdded(t)["content"] = "", "no content"),
    };

    public static TheoryData<string> CaseNames => new(Cases.Keys);

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void BrokenTokenizerIsOneLineNamingTheFile(string name)
    {
        var (breakIt, expected) = Cases[name];
        var tokenizer = ValidTokenizer();
        breakIt(tokenizer);
        string file = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(file, tokenizer.ToJsonString());
        InProcessDss.AssertOneLineError(InProcessDss.Run("tokenize", "--tokenizer", file, "--text", "hello world"), file, expected, maxSeconds: 5, maxAllocatedMb: 64);
    }

    [Fact]
    public void TheValidBaseEncodes()
    {
        string file = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(file, ValidTokenizer().ToJsonString());
        Assert.Equal(new ByteTokenizer().Encode("hello world"), HfTokenizer.Load(file).Encode("hello world"));
    }

    [Fact]
    public void CatastrophicRegexStopsAtTheMatchTimeout()
    {
        // (a+)+$ takes 61 s on 31 characters and four times that per two more; in a child, so a regression cannot hang the run.
        string file = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(file, ValidTokenizer("(a+)+$").ToJsonString());
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var r = DssProcess.Run(new Dictionary<string, string>(), TimeSpan.FromSeconds(60), "tokenize", "--tokenizer", file, "--text", new string('a', 40) + "!");
        DssProcess.AssertCleanError(r, file);
        Assert.Contains("(a+)+$", r.Stderr);
        Assert.True(clock.Elapsed.TotalSeconds < 20, $"{clock.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public void WindowedEncodingGivesTheIdsOfTheWholeText()
    {
        // The fixture texts (scripts, emoji, digits, code, whitespace runs) joined into one long text, then encoded
        // with windows from tiny to larger than the text: every window size must give the ids of the whole text.
        var tokenizer = HfTokenizer.Load(Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer", "tokenizer.json"));
        string text = string.Concat(Enumerable.Repeat(string.Join(" \n", HfTokenizerTests.Fixtures().Select(f => f.Text)), 3));
        tokenizer.Window = int.MaxValue;
        int[] whole = tokenizer.Encode(text);
        foreach (int window in new[] { 64, 333, 4096, 70_000 })
        {
            tokenizer.Window = window;
            var chunks = tokenizer.EncodeChunks(text).ToList();
            Assert.Equal(whole, chunks.SelectMany(c => c).ToArray());
        }
        Assert.True(text.Length > 70_000, "the text spans several of the larger windows");
        // A piece longer than the window (here "CamelCaseIdentifierName", 23 letters, in 16-character windows) is cut
        // at the window: other ids, the same text.
        tokenizer.Window = 16;
        var cut = tokenizer.EncodeChunks(text).SelectMany(c => c).ToArray();
        Assert.NotEqual(whole, cut);
        Assert.Equal(text, tokenizer.Decode(cut));
    }

    [Fact]
    public void ALongLineIsTokenizedInBoundedMemory()
    {
        // A 20 MB JSONL line under a 256 MiB heap: encoding it whole took 22x its size (OOM here); in windows ~5x.
        string text = File.ReadAllText(Path.Combine(TestPaths.Shared, "data", "tinyshakespeare", "input.txt"));
        string jsonl = Path.Combine(_dir, "long.jsonl");
        var node = new JsonObject { ["text"] = string.Concat(Enumerable.Repeat(text, 20_000_000 / text.Length + 1))[..20_000_000] };
        File.WriteAllText(jsonl, node.ToJsonString() + "\n");
        var r = DssProcess.Run(new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x10000000" }, TimeSpan.FromSeconds(120),
            "tokenize", "--tokenizer", TestPaths.Fixture(Path.Combine("tokenizer", "trained-800.json")), "--jsonl", jsonl);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.StartsWith("{\"ids\":[", r.Stdout);
        Assert.Equal(1, r.Stdout.Count(c => c == '\n'));
        Assert.True(r.Stdout.Count(c => c == ',') > 4_000_000, "a 20 MB text has millions of tokens");
    }
}
