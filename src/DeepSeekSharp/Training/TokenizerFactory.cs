using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Training;

/// <summary>
/// Picks the run's tokenizer from <c>tokenizer:</c> — by default the base model's <c>tokenizer.json</c> when there is a
/// <c>base_model</c> (an error if it has none), otherwise <c>byte</c> (built in, no file); a path to an HF
/// <c>tokenizer.json</c>, or <c>bpe</c> to train a byte-level BPE of <c>tokenizer_vocab_size</c> on the datasets
/// (saved as OUT/tokenizer.json, reused on later runs and resumes).
/// </summary>
public static class TokenizerFactory
{
    /// <param name="ct">stops a BPE training between documents (OperationCanceledException)</param>
    public static (ITextTokenizer Tokenizer, string? File) Create(TrainConfig cfg, Action<string> log, CancellationToken ct = default)
    {
        if (cfg.Tokenizer is null && cfg.BaseModel is not null)
        {
            // Fine-tuning keeps the base model's tokenizer: its ids are what the weights were trained on.
            string baseTokenizer = Path.Combine(cfg.BaseModel, "tokenizer.json");
            if (!File.Exists(baseTokenizer))
                throw new DeepSeekSharpException($"base_model {cfg.BaseModel} has no tokenizer.json; give tokenizer: PATH, or tokenizer: byte (a model is never fine-tuned with the byte tokenizer unless asked)");
            return (HfTokenizer.Load(baseTokenizer), baseTokenizer);
        }
        if (cfg.Tokenizer is null or "byte")
        {
            // Saved beside the checkpoints so `dss generate --prompt` and HF tools can read the models it trains.
            Directory.CreateDirectory(cfg.OutputDir);
            string path = Path.Combine(cfg.OutputDir, "tokenizer.json");
            ByteTokenizer.SaveAsHfJson(path);
            return (new ByteTokenizer(), path);
        }
        if (cfg.Tokenizer == "bpe")
        {
            string path = Path.Combine(cfg.OutputDir, "tokenizer.json");
            if (!File.Exists(path))
            {
                if (cfg.TokenizerVocabSize < 300) throw new DeepSeekSharpException("tokenizer: bpe needs tokenizer_vocab_size ≥ 300");
                log($"training a byte-level BPE tokenizer of {cfg.TokenizerVocabSize} tokens");
                Directory.CreateDirectory(cfg.OutputDir);
                var texts = cfg.Datasets.SelectMany(d => Data.DocumentReader.Read(d.Path, d.Type)).Select(d =>
                {
                    ct.ThrowIfCancellationRequested();
                    return d.Text;
                });
                BpeTrainer.TrainAndSave(texts, cfg.TokenizerVocabSize, path);
            }
            return (HfTokenizer.Load(path), path);
        }
        string file = Directory.Exists(cfg.Tokenizer) ? Path.Combine(cfg.Tokenizer, "tokenizer.json") : cfg.Tokenizer;
        return (HfTokenizer.Load(file), file);
    }
}
