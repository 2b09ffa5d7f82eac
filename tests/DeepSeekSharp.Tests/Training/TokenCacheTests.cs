using DeepSeekSharp.Tokenization;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The token cache (OUT/data/tokens.bin) is keyed on what was tokenised, not on paths and sizes.</summary>
public class TokenCacheTests
{
    private static int[] Tokens(TrainConfig cfg, ITextTokenizer tokenizer, string tokenizerFile)
    {
        using var data = TrainingData.Prepare(cfg, tokenizer, tokenizerFile, _ => { });
        var ids = new int[data.File.Count];
        data.File.Read(0, ids);
        return ids;
    }

    [Fact]
    public void ADatasetEditedInPlaceIsTokenisedAgain()
    {
        string dir = TestPaths.TempDir();
        string corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("abcd ", 200)));
        var cfg = TrainConfig.Load(null, [$"datasets={corpus}", $"output_dir={Path.Combine(dir, "run")}", "sequence_len=8"]);
        var first = Tokens(cfg, new ByteTokenizer(), "byte");
        Assert.Equal('a', first[0]);

        // Same size, same modification time: only the content says it changed.
        var written = File.GetLastWriteTimeUtc(corpus);
        File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("wxyz ", 200)));
        File.SetLastWriteTimeUtc(corpus, written);
        var second = Tokens(cfg, new ByteTokenizer(), "byte");
        Assert.Equal(first.Length, second.Length);
        Assert.Equal('w', second[0]);
    }

    [Fact]
    public void ATokenizerReplacedAtTheSamePathIsUsed()
    {
        string dir = TestPaths.TempDir();
        string corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("the cat and the hat ", 300)));
        var cfg = TrainConfig.Load(null, [$"datasets={corpus}", $"output_dir={Path.Combine(dir, "run")}", "sequence_len=8"]);
        string tokenizerFile = Path.Combine(dir, "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokenizerFile);
        var bytes = Tokens(cfg, HfTokenizer.Load(tokenizerFile), tokenizerFile);

        // A BPE with merges over the same 259 + 41 ids replaces it: the same file name, the same id width.
        var bpe = BpeTrainer.TrainAndSave([File.ReadAllText(corpus)], 300, tokenizerFile);
        var merged = Tokens(cfg, bpe, tokenizerFile);
        Assert.Equal(bpe.Encode(File.ReadAllText(corpus)).Length + 1, merged.Length); // the text and one EOS
        Assert.True(merged.Length < bytes.Length / 2, $"{merged.Length} tokens: the old byte-level ids were reused");
    }
}
