using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>A run from a base_model uses the base's own tokenizer, or refuses to start: never a silent byte tokenizer.</summary>
public sealed class BaseModelTokenizerTests
{
    [Fact]
    public void FineTuningKeepsTheBaseModelsTokenizerAndRefusesABaseWithoutOne()
    {
        string dir = TestPaths.TempDir();
        string corpus = TinyRun.Corpus(dir);
        // A base whose tokenizer is not the byte tokenizer: a BPE trained on the corpus.
        string baseRun = Path.Combine(dir, "base");
        TinyRun.Train(TinyRun.Settings(corpus, baseRun, "tokenizer=bpe", "tokenizer_vocab_size=300", "max_steps=3"));
        string baseModel = Path.Combine(baseRun, "checkpoint-3");
        string baseTokenizer = File.ReadAllText(Path.Combine(baseModel, "tokenizer.json"));
        Assert.Contains("\"merges\"", baseTokenizer);

        string tuned = Path.Combine(dir, "tuned");
        TinyRun.Train(TinyRun.Settings(corpus, tuned, $"base_model={baseModel}", "max_steps=3"));
        Assert.Equal(baseTokenizer, File.ReadAllText(Path.Combine(tuned, "checkpoint-3", "tokenizer.json")));

        string bare = Path.Combine(dir, "bare");
        Directory.CreateDirectory(bare);
        foreach (var f in Directory.GetFiles(baseModel).Where(f => Path.GetFileName(f) is "config.json" or "model.safetensors"))
            File.Copy(f, Path.Combine(bare, Path.GetFileName(f)));
        var ex = Assert.Throws<DeepSeekSharpException>(() => TinyRun.Train(TinyRun.Settings(corpus, Path.Combine(dir, "tuned2"), $"base_model={bare}", "max_steps=3")));
        Assert.Contains($"base_model {bare} has no tokenizer.json", ex.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "tuned2", "checkpoint-3")));

        // Asked for explicitly, the byte tokenizer is used even with a base (a random-init base made by `dss init` has none).
        string byteRun = Path.Combine(dir, "tuned3");
        TinyRun.Train(TinyRun.Settings(corpus, byteRun, $"base_model={bare}", "tokenizer=byte", "max_steps=3"));
        string written = File.ReadAllText(Path.Combine(byteRun, "checkpoint-3", "tokenizer.json"));
        Assert.NotEqual(baseTokenizer, written);
        Assert.Equal(new DeepSeekSharp.Tokenization.ByteTokenizer().VocabSize, DeepSeekSharp.Tokenization.HfTokenizer.Load(Path.Combine(byteRun, "checkpoint-3", "tokenizer.json")).VocabSize);
    }
}
