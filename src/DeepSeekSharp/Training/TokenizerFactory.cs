using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Training;

/// <summary>
/// Picks the run's tokenizer from <c>tokenizer:</c> — <c>byte</c> (built in, no file), a path to an HF
/// <c>tokenizer.json</c>, or <c>bpe</c> to train a byte-level BPE of <c>tokenizer_vocab_size</c> on the datasets
/// (saved as OUT/tokenizer.json, reused on later runs).
/// </summary>
public static class TokenizerFactory
{
    public static (ITextTokenizer Tokenizer, string? File) Create(TrainConfig cfg, Action<string> log)
    {
        if (cfg.Tokenizer == "byte") return (new ByteTokenizer(), null);
        throw new DeepSeekSharpException($"tokenizer: '{cfg.Tokenizer}' is not available yet (only 'byte')");
    }
}
