using System.Text.Json;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Tokenization;

/// <summary>The real DeepSeek-V3 tokenizer against encodings produced by HF tokenizers (tools/tokenizer-fixtures).</summary>
public class HfTokenizerTests
{
    private static readonly Lazy<HfTokenizer> DeepSeek = new(() =>
        HfTokenizer.Load(Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer", "tokenizer.json")));

    public static IEnumerable<(string Text, int[] Ids)> Fixtures()
    {
        foreach (var line in File.ReadLines(TestPaths.Fixture(Path.Combine("tokenizer", "deepseek-v3-encodings.jsonl"))))
        {
            using var doc = JsonDocument.Parse(line);
            yield return (doc.RootElement.GetProperty("text").GetString()!, doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
        }
    }

    [Fact]
    public void EncodingMatchesHuggingFaceTokenForToken()
    {
        var tok = DeepSeek.Value;
        int n = 0;
        var failures = new List<string>();
        foreach (var (text, ids) in Fixtures())
        {
            var got = tok.Encode(text);
            if (!got.SequenceEqual(ids)) failures.Add($"{JsonSerializer.Serialize(text)}: want [{string.Join(",", ids)}] got [{string.Join(",", got)}]");
            n++;
        }
        Assert.True(n >= 300, $"only {n} fixture texts");
        Assert.True(failures.Count == 0, $"{failures.Count} of {n} differ:\n" + string.Join("\n", failures.Take(10)));
    }

    [Fact]
    public void DecodeRoundTripsEveryFixtureText()
    {
        var tok = DeepSeek.Value;
        foreach (var (text, _) in Fixtures())
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void SpecialTokensAreRecognisedAndSkippable()
    {
        var tok = DeepSeek.Value;
        Assert.Equal(0, tok.BosId);
        Assert.Equal(1, tok.EosId);
        int user = tok.TokenToId("<｜User｜>")!.Value;
        var ids = tok.Encode("<｜User｜>hi<｜end▁of▁sentence｜>");
        Assert.Equal(user, ids[0]);
        Assert.Equal(1, ids[^1]);
        // <｜User｜> is an added but non-special token in DeepSeek-V3 (as HF decodes it); EOS is special.
        Assert.Equal("<｜User｜>hi", tok.Decode(ids, skipSpecialTokens: true));
        Assert.True(tok.VocabSize >= 128_815);
    }

    [Fact]
    public void MalformedTokenizerFileIsAOneLineErrorNamingTheFile()
    {
        string path = Path.Combine(TestPaths.TempDir(), "tokenizer.json");
        foreach (var bad in new[] { "{", "{}", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}" })
        {
            File.WriteAllText(path, bad);
            var e = Assert.ThrowsAny<DeepSeekSharpException>(() => HfTokenizer.Load(path));
            Assert.Contains("tokenizer.json", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
    }
}

public class ByteTokenizerTests
{
    [Fact]
    public void HfJsonFormOfTheByteTokenizerEncodesTheSame()
    {
        string path = Path.Combine(TestPaths.TempDir(), "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(path);
        var hf = HfTokenizer.Load(path);
        var bytes = new ByteTokenizer();
        foreach (var text in new[] { "Hello, world!", "ROMEO:\nWhat light", "naïve 中文 😀", "  spaces\t\ttabs" })
        {
            Assert.Equal(bytes.Encode(text), hf.Encode(text));
            Assert.Equal(text, hf.Decode(hf.Encode(text)));
        }
        Assert.Equal(ByteTokenizer.Eos, hf.EosId);
        Assert.Equal(259, hf.VocabSize);
    }
}
