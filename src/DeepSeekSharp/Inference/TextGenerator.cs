using System.Diagnostics;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Inference;

/// <summary>What to generate and when to stop.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 128;
    public SamplingOptions Sampling { get; init; } = new();
    /// <summary>Ids that end generation (not included in the output), e.g. EOS.</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];
    /// <summary>Texts that end generation (the output is cut before them); needs a tokenizer.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Draft with the MTP module and verify with the main model (same output as plain decoding when greedy).</summary>
    public bool SpeculativeMtp { get; init; }
    /// <summary>
    /// Report each generated token's <see cref="TokenLogprob"/> with this many of the most likely ids beside it
    /// (0 = the token's own log-probability only); null (the default) reports none.
    /// </summary>
    public int? TopLogprobs { get; init; }
}

/// <summary>One generated token, as it is produced.</summary>
/// <param name="Id">the token id</param>
/// <param name="Text">
/// the text this token makes final: empty while the output ends inside a UTF-8 character or with what could be
/// the start of a stop string; never any part of a stop string. The pieces of a generation joined, then whatever
/// of <see cref="GenerationResult.Text"/> is left after them, are the whole text.
/// </param>
/// <param name="Logprob">the token's log-probabilities when <see cref="GenerationOptions.TopLogprobs"/> is set</param>
public readonly record struct GeneratedToken(int Id, string Text, TokenLogprob? Logprob);

/// <param name="Tokens">generated ids only</param>
/// <param name="AcceptedDraftTokens">MTP drafts the main model accepted</param>
/// <param name="DraftedTokens">MTP drafts proposed</param>
/// <param name="FinishReason">"stop" (stop token or string) or "length"</param>
public sealed record GenerationResult(int[] Tokens, string? Text, int AcceptedDraftTokens, int DraftedTokens, double TokensPerSecond, string FinishReason)
{
    public double AcceptanceRate => DraftedTokens == 0 ? 0 : (double)AcceptedDraftTokens / DraftedTokens;

    /// <summary>One per generated token when <see cref="GenerationOptions.TopLogprobs"/> is set, else null.</summary>
    public IReadOnlyList<TokenLogprob>? Logprobs { get; init; }
}

/// <summary>
/// Autoregressive generation on the latent-cache decoder: plain decoding, or MTP self-speculative decoding where
/// the MTP module drafts the token after next and the main model verifies draft and successor in one pass.
/// Greedy speculative output equals greedy plain output exactly; with sampling, drafts are accepted with
/// probability min(1, p/q) and rejections resample from max(0, p − q), so the output distribution is the main
/// model's.
/// </summary>
public sealed class TextGenerator
{
    private readonly CachedDecoder _decoder;
    private readonly ITextTokenizer? _tokenizer;

    public TextGenerator(CachedDecoder decoder, ITextTokenizer? tokenizer)
    {
        _decoder = decoder;
        _tokenizer = tokenizer;
    }

    private int Vocab => _decoder.Model.Config.VocabSize;

    private int Usable => _tokenizer is null ? Vocab : Math.Min(Vocab, _tokenizer.VocabSize);

    /// <param name="onToken">called with each generated token as it is produced (after the stop rules)</param>
    public GenerationResult Generate(int[] prompt, GenerationOptions options, Action<GeneratedToken>? onToken = null, CancellationToken ct = default)
    {
        if (prompt.Length == 0) throw new DeepSeekSharpException("the prompt is empty");
        if (options.MaxNewTokens < 0) throw new DeepSeekSharpException("max new tokens must be ≥ 0");
        int maxPos = _decoder.Model.Config.MaxPositionEmbeddings;
        if (prompt.Length + options.MaxNewTokens + 1 > maxPos)
            throw new DeepSeekSharpException($"prompt ({prompt.Length} tokens) + max new tokens ({options.MaxNewTokens}) exceed the model's context of {maxPos}");
        if (options.StopStrings.Count > 0 && _tokenizer is null) throw new DeepSeekSharpException("stop strings need a tokenizer");
        if (options.SpeculativeMtp && _decoder.Model.MtpModules.Count == 0) throw new DeepSeekSharpException("--speculative mtp needs a model with an MTP module");
        if (options.TopLogprobs is < 0) throw new DeepSeekSharpException("top logprobs must be ≥ 0");
        var sampler = new Sampler(options.Sampling);
        var emitter = new Emitter(this, prompt, options, onToken);
        var clock = Stopwatch.StartNew();
        int accepted = 0, drafted = 0;
        if (options.MaxNewTokens > 0)
        {
            var cache = _decoder.NewCache();
            var (logits, hidden) = _decoder.Forward([(prompt, cache)]);
            int x = sampler.Sample(Dist(sampler, logits, prompt.Length - 1, emitter.History));
            var xLogprob = Logprob(logits, prompt.Length - 1, x, options);
            if (!options.SpeculativeMtp)
            {
                while (emitter.Emit(x, xLogprob) && !ct.IsCancellationRequested)
                {
                    (logits, _) = _decoder.Forward([(new[] { x }, cache)]);
                    x = sampler.Sample(Dist(sampler, logits, 0, emitter.History));
                    xLogprob = Logprob(logits, 0, x, options);
                }
            }
            else
            {
                var mtpCache = _decoder.NewMtpCache();
                int h = _decoder.Model.Config.HiddenSize;
                // MTP row j pairs embed(t_{j+1}) with h_j; the last row (x, h_{P-1}) drafts the token after x.
                var next = prompt[1..].Append(x).ToArray();
                var mtpLogits = _decoder.MtpForward(next, hidden, mtpCache);
                var q = Dist(sampler, mtpLogits, next.Length - 1, emitter.History);
                int d = sampler.Sample(q);
                while (emitter.Emit(x, xLogprob) && !ct.IsCancellationRequested)
                {
                    var (l2, h2) = _decoder.Forward([(new[] { x, d }, cache)]);
                    drafted++;
                    var p1 = Dist(sampler, l2, 0, emitter.History);
                    bool ok = sampler.IsGreedy ? p1[d] == 1.0 : sampler.NextUniform() < Math.Min(1.0, p1[d] / Math.Max(q[d], 1e-30));
                    if (ok)
                    {
                        accepted++;
                        if (!emitter.Emit(d, Logprob(l2, 0, d, options)) || ct.IsCancellationRequested) break;
                        int x2 = sampler.Sample(Dist(sampler, l2, 1, emitter.History));
                        xLogprob = Logprob(l2, 1, x2, options);
                        mtpLogits = _decoder.MtpForward([d, x2], h2, mtpCache);
                        q = Dist(sampler, mtpLogits, 1, emitter.History);
                        x = x2;
                    }
                    else
                    {
                        cache.Truncate(cache.Length - 1); // drop the rejected draft's cache entries
                        int y = sampler.IsGreedy ? Sampler.ArgMax(p1.Select(v => (float)v).ToArray()) : sampler.Sample(Residual(p1, q));
                        xLogprob = Logprob(l2, 0, y, options);
                        var hx = Tensor.FromArray(h2.Span[..h].ToArray(), 1, h);
                        mtpLogits = _decoder.MtpForward([y], hx, mtpCache);
                        q = Dist(sampler, mtpLogits, 0, emitter.History);
                        x = y;
                    }
                    d = sampler.Sample(q);
                }
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        var tokens = emitter.Output.ToArray();
        return new GenerationResult(tokens, emitter.Text, accepted, drafted, seconds > 0 ? tokens.Length / seconds : 0, emitter.FinishReason)
        {
            Logprobs = options.TopLogprobs is null ? null : emitter.Logprobs,
        };
    }

    private TokenLogprob? Logprob(Tensor logits, int row, int token, GenerationOptions options) =>
        options.TopLogprobs is int top ? TokenLogprob.FromLogits(logits.Span.Slice(row * Vocab, Usable), token, top) : null;

    private double[] Dist(Sampler sampler, Tensor logits, int row, IReadOnlyCollection<int> history) =>
        sampler.Distribution(logits.Span.Slice(row * Vocab, Vocab), history, Usable);

    private static double[] Residual(double[] p, double[] q)
    {
        var r = new double[p.Length];
        double s = 0;
        for (int i = 0; i < p.Length; i++) s += r[i] = Math.Max(0, p[i] - q[i]);
        if (s <= 0) return p;
        for (int i = 0; i < r.Length; i++) r[i] /= s;
        return r;
    }

    /// <summary>Collects output tokens, applies the stop rules and decides which text is final.</summary>
    private sealed class Emitter(TextGenerator owner, int[] prompt, GenerationOptions options, Action<GeneratedToken>? onToken)
    {
        private string _released = "";

        public List<int> Output { get; } = [];
        public List<int> History { get; } = [.. prompt];
        public List<TokenLogprob> Logprobs { get; } = [];
        public string FinishReason { get; private set; } = "length";
        public string? Text { get; private set; } = owner._tokenizer is null ? null : "";

        /// <summary>Adds a token; false when generation must end (the token is not added if it is a stop token).</summary>
        public bool Emit(int token, TokenLogprob? logprob)
        {
            if (Output.Count >= options.MaxNewTokens) return false;
            if (options.StopTokens.Contains(token)) { FinishReason = "stop"; return false; }
            Output.Add(token);
            History.Add(token);
            if (logprob is not null) Logprobs.Add(logprob);
            bool stopped = false;
            string delta = "";
            if (owner._tokenizer is not null)
            {
                string text = owner._tokenizer.Decode(Output.ToArray());
                int at = FirstStop(text);
                if (at >= 0) { text = text[..at]; FinishReason = "stop"; stopped = true; }
                Text = text;
                string final = stopped ? text : Settled(text);
                if (final.Length > _released.Length && final.StartsWith(_released, StringComparison.Ordinal))
                {
                    delta = final[_released.Length..];
                    _released = final;
                }
            }
            onToken?.Invoke(new GeneratedToken(token, delta, logprob));
            return !stopped && Output.Count < options.MaxNewTokens;
        }

        /// <summary>Where the earliest stop string starts in <paramref name="text"/>, or -1.</summary>
        private int FirstStop(string text)
        {
            int first = -1;
            foreach (var s in options.StopStrings)
            {
                int at = s.Length == 0 ? -1 : text.IndexOf(s, StringComparison.Ordinal);
                if (at >= 0 && (first < 0 || at < first)) first = at;
            }
            return first;
        }

        /// <summary>
        /// The part of <paramref name="text"/> that no later token can change or cut: without a trailing
        /// incomplete character (decoded as U+FFFD until its last byte arrives) and without the longest ending
        /// that a stop string starts with (a stop string completed later must start inside that ending).
        /// </summary>
        private string Settled(string text)
        {
            text = text.TrimEnd('\uFFFD');
            int held = 0;
            foreach (var s in options.StopStrings)
                for (int k = Math.Min(s.Length - 1, text.Length); k > held; k--)
                    if (string.CompareOrdinal(text, text.Length - k, s, 0, k) == 0) { held = k; break; }
            return text[..^held];
        }
    }
}
