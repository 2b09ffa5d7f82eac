using System.Runtime.CompilerServices;
using System.Threading.Channels;
using DeepSeekSharp.Tokenization;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Inference;

/// <summary>
/// <see cref="IChatClient"/> (Microsoft.Extensions.AI) over a local model: messages are rendered with
/// <see cref="ChatTemplate"/>, generation stops at EOS, streaming yields text deltas as tokens are produced.
/// Thread-safe: each call has its own cache.
/// </summary>
public sealed class DeepSeekChatClient : IChatClient
{
    private readonly TextGenerator _generator;
    private readonly HfTokenizer _tokenizer;
    private readonly bool _speculative;

    public DeepSeekChatClient(CachedDecoder decoder, HfTokenizer tokenizer, string modelId, bool speculativeMtp = false)
    {
        _generator = new TextGenerator(decoder, tokenizer);
        _tokenizer = tokenizer;
        ModelId = modelId;
        _speculative = speculativeMtp && decoder.Model.MtpModules.Count > 0;
        MaxContext = decoder.Model.Config.MaxPositionEmbeddings;
    }

    public string ModelId { get; }

    public int MaxContext { get; }

    public int[] EncodeChat(IEnumerable<ChatMessage> messages) =>
        _tokenizer.Encode(ChatTemplate.Render(messages.Select(m => (m.Role.Value, m.Text)), addGenerationPrompt: true));

    public GenerationOptions Options(ChatOptions? o, int promptTokens)
    {
        int max = o?.MaxOutputTokens ?? Math.Min(256, MaxContext - promptTokens - 1);
        return new GenerationOptions
        {
            MaxNewTokens = Math.Max(0, max),
            Sampling = new SamplingOptions
            {
                Temperature = o?.Temperature ?? 0f, TopP = o?.TopP ?? 1f, TopK = o?.TopK ?? 0,
                Seed = o?.Seed is long s ? (int)s : null,
            },
            StopTokens = _tokenizer.EosId is int eos ? [eos] : [],
            StopStrings = o?.StopSequences?.ToArray() ?? [],
            SpeculativeMtp = _speculative,
        };
    }

    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var prompt = EncodeChat(messages);
        return Task.Run(() =>
        {
            var result = _generator.Generate(prompt, Options(options, prompt.Length), null, cancellationToken);
            return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text ?? ""))
            {
                ModelId = ModelId,
                FinishReason = result.FinishReason == "stop" ? ChatFinishReason.Stop : ChatFinishReason.Length,
                Usage = new UsageDetails { InputTokenCount = prompt.Length, OutputTokenCount = result.Tokens.Length, TotalTokenCount = prompt.Length + result.Tokens.Length },
            };
        }, cancellationToken);
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var prompt = EncodeChat(messages);
        await foreach (var (delta, finish) in StreamTextAsync(prompt, Options(options, prompt.Length), cancellationToken))
            yield return new ChatResponseUpdate(ChatRole.Assistant, delta)
            {
                ModelId = ModelId,
                FinishReason = finish is null ? null : finish == "stop" ? ChatFinishReason.Stop : ChatFinishReason.Length,
            };
    }

    /// <summary>Text deltas as they are generated; the last item carries the finish reason.</summary>
    public async IAsyncEnumerable<(string Delta, string? FinishReason)> StreamTextAsync(int[] prompt, GenerationOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateUnbounded<(string, string?)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var producer = Task.Run(() =>
        {
            var tokens = new List<int>();
            string sent = "";
            try
            {
                var result = _generator.Generate(prompt, options, token =>
                {
                    tokens.Add(token);
                    string text = _tokenizer.Decode(tokens.ToArray());
                    if (text.Length > sent.Length && !text.EndsWith('\uFFFD') && !StopPrefixPending(text, options))
                    {
                        channel.Writer.TryWrite((text[sent.Length..], null));
                        sent = text;
                    }
                }, cancellationToken);
                string final = result.Text ?? "";
                channel.Writer.TryWrite((final.Length > sent.Length && final.StartsWith(sent, StringComparison.Ordinal) ? final[sent.Length..] : "", result.FinishReason));
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
        }, CancellationToken.None);
        await foreach (var item in channel.Reader.ReadAllAsync(cancellationToken)) yield return item;
        await producer;
    }

    /// <summary>Holds back text that could be the start of a stop string, so a stop string is never streamed.</summary>
    private static bool StopPrefixPending(string text, GenerationOptions options)
    {
        foreach (var s in options.StopStrings)
            for (int k = Math.Min(s.Length - 1, text.Length); k > 0; k--)
                if (string.CompareOrdinal(text, text.Length - k, s, 0, k) == 0) return true;
        return false;
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is null && serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() { }
}
