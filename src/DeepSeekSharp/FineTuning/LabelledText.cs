using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.FineTuning;

/// <summary>
/// A rendered example before tokenization: its text and the character ranges that carry loss, with the special
/// tokens to add around it. <see cref="Tokenize"/> turns it into ids and labels.
/// </summary>
/// <param name="Text">the text, encoded whole (so its ids are exactly the tokenizer's ids of the rendered string)</param>
/// <param name="Trained">character ranges [Start, End) of <paramref name="Text"/> whose tokens carry loss</param>
/// <param name="AddBos">put the BOS id first (without loss)</param>
/// <param name="AddEos">put the EOS id last</param>
/// <param name="TrainEos">whether that EOS carries loss</param>
public sealed record LabelledText(string Text, IReadOnlyList<(int Start, int End)> Trained, bool AddBos = false, bool AddEos = false, bool TrainEos = false)
{
    /// <summary>
    /// The ids of the whole text and, per id, its label: the id itself where the token lies in a trained range, else
    /// <see cref="TokenizedExample.IgnoreIndex"/>. A range boundary is placed at a token boundary by encoding the text up
    /// to it and comparing with the whole encoding (the longest common prefix): a token that straddles a boundary
    /// belongs to the range that starts inside it. No tokenizer offsets are needed, so this works for any tokenizer.
    /// </summary>
    public TokenizedExample Tokenize(ITextTokenizer tokenizer, bool trainAll = false)
    {
        int[] body = tokenizer.Encode(Text);
        int offset = AddBos ? 1 : 0;
        int length = offset + body.Length + (AddEos ? 1 : 0);
        var ids = new int[length];
        var labels = new int[length];
        Array.Fill(labels, TokenizedExample.IgnoreIndex);
        if (AddBos) ids[0] = tokenizer.BosId ?? throw new DeepSeekSharpException("the tokenizer has no BOS token to start an example with");
        body.CopyTo(ids, offset);
        if (AddEos) ids[^1] = tokenizer.EosId ?? throw new DeepSeekSharpException("the tokenizer has no EOS token to end an example with");
        var boundaries = new Dictionary<int, int> { [0] = 0, [Text.Length] = body.Length };
        int TokenAt(int charIndex)
        {
            if (boundaries.TryGetValue(charIndex, out int t)) return t;
            int[] prefix = tokenizer.Encode(Text[..charIndex]);
            int common = 0;
            while (common < prefix.Length && common < body.Length && prefix[common] == body[common]) common++;
            return boundaries[charIndex] = common;
        }
        foreach (var (start, end) in Trained)
        {
            if (start < 0 || end > Text.Length || start > end) throw new ArgumentOutOfRangeException(nameof(Trained), $"range [{start}, {end}) outside the text of {Text.Length} characters");
            for (int k = TokenAt(start), stop = TokenAt(end); k < stop; k++) labels[offset + k] = ids[offset + k];
        }
        if (AddEos && TrainEos) labels[^1] = ids[^1];
        if (trainAll) Array.Copy(ids, labels, length);
        return new TokenizedExample(ids, labels);
    }
}
