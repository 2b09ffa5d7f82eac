using System.Text.Json;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Tokenization;

/// <summary>
/// The trainer is deterministic, and what it writes is a tokenizer.json that HF tokenizers loads and encodes the
/// same way we do (the fixture encodings come from HF tokenizers run on the committed trained file).
/// </summary>
public class BpeTrainerTests
{
    private static string Corpus()
    {
        using var reader = new StreamReader(Path.Combine(TestPaths.Shared, "data", "tinyshakespeare", "input.txt"));
        var buffer = new char[200_000];
        int n = reader.ReadBlock(buffer, 0, buffer.Length);
        return new string(buffer, 0, n);
    }

    [Fact]
    public void RetrainingReproducesTheCommittedFile()
    {
        string committed = File.ReadAllText(TestPaths.Fixture(Path.Combine("tokenizer", "trained-800.json")));
        string again = BpeTrainer.Train([Corpus()], 800, BpeTrainer.DefaultSpecialTokens);
        Assert.Equal(committed, again);
    }

    [Fact]
    public void TrainedTokenizerEncodesLikeHuggingFace()
    {
        var tok = HfTokenizer.Load(TestPaths.Fixture(Path.Combine("tokenizer", "trained-800.json")));
        Assert.Equal(800, tok.VocabSize);
        int n = 0;
        foreach (var line in File.ReadLines(TestPaths.Fixture(Path.Combine("tokenizer", "trained-800-encodings.jsonl"))))
        {
            using var doc = JsonDocument.Parse(line);
            string text = doc.RootElement.GetProperty("text").GetString()!;
            var want = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.True(want.SequenceEqual(tok.Encode(text)), $"differs on {JsonSerializer.Serialize(text)}");
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
            n++;
        }
        Assert.True(n > 300);
    }

    [Fact]
    public void MergesFollowFrequency()
    {
        // "ab" occurs far more often than anything else, so it must be the first merge.
        string json = BpeTrainer.Train(["ab ab ab ab ab ab cd ab xy ab"], 3 + 256 + 1, BpeTrainer.DefaultSpecialTokens);
        using var doc = JsonDocument.Parse(json);
        var first = doc.RootElement.GetProperty("model").GetProperty("merges")[0];
        Assert.Equal("a", first[0].GetString());
        Assert.Equal("b", first[1].GetString());
    }
}
