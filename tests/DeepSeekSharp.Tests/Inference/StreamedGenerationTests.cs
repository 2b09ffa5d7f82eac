using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>
/// What <see cref="TextGenerator"/> hands out while it generates: text pieces that never hold any part of a stop
/// string, and per-token log-probabilities. The v3-tiny fixture has 128 ids, so with the byte tokenizer every
/// generated token is one ASCII character.
/// </summary>
public class StreamedGenerationTests
{
    private static readonly Lazy<DeepSeekModel> Model = new(() => ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")));
    private static readonly int[] Prompt = [72, 101, 108, 108, 111];

    private static (GenerationResult Result, List<GeneratedToken> Tokens) Run(GenerationOptions options)
    {
        var tokens = new List<GeneratedToken>();
        var result = new TextGenerator(new CachedDecoder(Model.Value), new ByteTokenizer()).Generate(Prompt, options, tokens.Add);
        return (result, tokens);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StreamedPiecesStopBeforeTheStopString(bool speculative)
    {
        var (full, _) = Run(new GenerationOptions { MaxNewTokens = 40, SpeculativeMtp = speculative });
        string text = full.Text!;
        // A stop string first occurring after the start, whose first character shows up before it does.
        int at = Enumerable.Range(2, text.Length - 3).First(k => text.IndexOf(text.Substring(k, 2), StringComparison.Ordinal) == k && text[..k].Contains(text[k]));
        string stop = text.Substring(at, 2);

        var (stopped, tokens) = Run(new GenerationOptions { MaxNewTokens = 40, SpeculativeMtp = speculative, StopStrings = [stop] });
        Assert.Equal(text[..at], stopped.Text);
        Assert.Equal("stop", stopped.FinishReason);
        Assert.Equal(stopped.Tokens, tokens.Select(t => t.Id));
        Assert.Equal(at + stop.Length, tokens.Count);
        // A character goes out with its token unless it could start the stop string; then it waits for the next.
        string released = "";
        for (int i = 0; i < tokens.Count; i++)
        {
            released += tokens[i].Text;
            string expected = i + 1 == tokens.Count ? text[..at] : text[i] == stop[0] ? text[..i] : text[..(i + 1)];
            Assert.Equal(expected, released);
        }
    }

    [Fact]
    public void TextHeldBackForAStopStringThatNeverCompletesComesOutInTheEnd()
    {
        var (full, _) = Run(new GenerationOptions { MaxNewTokens = 30 });
        string neverCompletes = full.Text![^1] + "\u0001\u0002"; // the last character could start it
        var (result, tokens) = Run(new GenerationOptions { MaxNewTokens = 30, StopStrings = [neverCompletes] });
        string streamed = string.Concat(tokens.Select(t => t.Text));
        Assert.Equal(full.Text, result.Text);
        Assert.Equal(full.Text[..^1], streamed);
        Assert.Equal("length", result.FinishReason);
    }

    [Fact]
    public void LogprobsAreTheSameWithAndWithoutSpeculativeDecoding()
    {
        var (plain, plainTokens) = Run(new GenerationOptions { MaxNewTokens = 20, TopLogprobs = 3 });
        var (speculative, _) = Run(new GenerationOptions { MaxNewTokens = 20, TopLogprobs = 3, SpeculativeMtp = true });
        Assert.True(speculative.DraftedTokens > 0);
        Assert.Equal(plain.Tokens, speculative.Tokens);
        Assert.Equal(plain.Tokens, plain.Logprobs!.Select(l => l.Token));
        Assert.Equal(plain.Logprobs, plainTokens.Select(t => t.Logprob));
        for (int i = 0; i < plain.Tokens.Length; i++)
        {
            var (a, b) = (plain.Logprobs![i], speculative.Logprobs![i]);
            Assert.Equal(a.Token, b.Token);
            Assert.Equal(a.Logprob, b.Logprob, 4);
            Assert.Equal(a.Top.Select(t => t.Token), b.Top.Select(t => t.Token));
            Assert.Equal(3, a.Top.Count);
            Assert.Equal(a.Token, a.Top[0].Token); // greedy picks the most likely
            Assert.Equal(a.Logprob, a.Top[0].Logprob);
        }
        Assert.Null(Run(new GenerationOptions { MaxNewTokens = 3 }).Result.Logprobs);
    }

    [Fact]
    public void LogprobsAreTheLogSoftmaxOfTheLogits()
    {
        float[] logits = [1f, 3f, 3f, -2f, 0.5f];
        double logNormalizer = Math.Log(logits.Sum(z => Math.Exp(z)));
        var lp = TokenLogprob.FromLogits(logits, 4, top: 3);
        Assert.Equal(0.5 - logNormalizer, lp.Logprob, 12);
        Assert.Equal([1, 2, 0], lp.Top.Select(t => t.Token)); // equal logits: lower id first
        Assert.Equal([3 - logNormalizer, 3 - logNormalizer, 1 - logNormalizer], lp.Top.Select(t => t.Logprob));
        Assert.Empty(TokenLogprob.FromLogits(logits, 0, top: 0).Top);
        Assert.Throws<DeepSeekSharpException>(() => TokenLogprob.FromLogits(logits, 5, top: 1));
    }
}
