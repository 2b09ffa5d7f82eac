namespace DeepSeekSharp.Tokenization;

/// <summary>What training, evaluation and generation need from a tokenizer.</summary>
public interface ITextTokenizer
{
    /// <summary>Number of ids the model's embedding must cover.</summary>
    int VocabSize { get; }

    /// <summary>End-of-document id placed between packed documents.</summary>
    int? EosId { get; }

    int? BosId { get; }

    /// <summary>Token ids of <paramref name="text"/> (no special tokens added).</summary>
    int[] Encode(string text);

    /// <summary>The ids of <see cref="Encode"/> in consecutive chunks, for texts too long to hold all their ids at once
    /// (a tokenizer that can make them as it goes does).</summary>
    IEnumerable<int[]> EncodeChunks(string text) => [Encode(text)];

    string Decode(ReadOnlySpan<int> ids);
}
