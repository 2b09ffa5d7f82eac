using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Threading.Channels;
using DeepSeekSharp.Tokenization;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Inference;

/// <summary>A streamed piece of a generation.</summary>
/// <param name="Text">text made final since the previous piece (see <see cref="GeneratedToken.Text"/>)</param>
/// <param name="Logprobs">the log-probabilities of the tokens generated since the previous piece (empty unless asked for)</param>
/// <param name="FinishReason">"stop" or "length" on the last piece, else null</param>
/// <param name="CompletionTokens">on the last piece: how many tokens were generated</param>
public sealed record GenerationUpdate(string Text, IReadOnlyList<TokenLogprob> Logprobs, string? FinishReason, int? CompletionTokens);

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
    private readonly PromptScorer _scorer;

    public DeepSeekChatClient(CachedDecoder decoder, HfTokenizer tokenizer, string modelId, bool speculativeMtp = false)
    {
        _generator = new TextGenerator(decoder, tokenizer);
        _scorer = new PromptScorer(decoder.Model);
        _tokenizer = tokenizer;
        ModelId = modelId;
        _speculative = speculativeMtp && decoder.Model.MtpModules.Count > 0;
        MaxContext = decoder.Model.Config.MaxPositionEmbeddings;
        VocabSize = Math.Min(decoder.Model.Config.VocabSize, tokenizer.VocabSize);
    }

    public string ModelId { get; }

    public int MaxContext { get; }

    /// <summary>Ids a prompt may hold: those both the model and the tokenizer know.</summary>
    public int VocabSize { get; }

    public int[] EncodeChat(IEnumerable<ChatTemplate.Message> messages) =>
        _tokenizer.Encode(ChatTemplate.Render(messages, addGenerationPrompt: true));

    public int[] EncodeChat(IEnumerable<ChatMessage> messages) => EncodeChat(messages.Select(ToTemplate));

    /// <summary>
    /// A Microsoft.Extensions.AI message as the template reads it: an assistant turn that only calls functions
    /// becomes tool calls (arguments as JSON), a tool turn's function results become its text.
    /// </summary>
    private static ChatTemplate.Message ToTemplate(ChatMessage m)
    {
        var calls = m.Contents.OfType<FunctionCallContent>().Select(c => new ChatTemplate.ToolCall(c.Name, JsonSerializer.Serialize(c.Arguments))).ToList();
        if (m.Role == ChatRole.Assistant && calls.Count > 0 && m.Text.Length == 0) return new ChatTemplate.Message(m.Role.Value, null, calls);
        string text = m.Text;
        if (text.Length == 0 && m.Contents.OfType<FunctionResultContent>().Any())
            text = string.Join("\n", m.Contents.OfType<FunctionResultContent>().Select(r => r.Result as string ?? JsonSerializer.Serialize(r.Result)));
        return new ChatTemplate.Message(m.Role.Value, text);
    }

    /// <summary>The model's log-probabilities of a prompt's tokens after the first and its top ids per position (see <see cref="PromptScorer"/>).</summary>
    public Distillation.TeacherScores ScorePrompt(int[] prompt, int top) => _scorer.Score(prompt, top);

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
        await foreach (var update in StreamTextAsync(prompt, Options(options, prompt.Length), cancellationToken))
            yield return new ChatResponseUpdate(ChatRole.Assistant, update.Text)
            {
                ModelId = ModelId,
                FinishReason = update.FinishReason switch { null => null, "stop" => ChatFinishReason.Stop, _ => ChatFinishReason.Length },
            };
    }

    /// <summary>
    /// The generation as it is produced: a piece whenever text becomes final (see <see cref="GeneratedToken.Text"/>:
    /// a stop string is never sent, not even its start), and a last piece with the rest of the text, the finish
    /// reason and the number of generated tokens.
    /// </summary>
    public async IAsyncEnumerable<GenerationUpdate> StreamTextAsync(int[] prompt, GenerationOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateUnbounded<GenerationUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var producer = Task.Run(() =>
        {
            int sent = 0;
            var logprobs = new List<TokenLogprob>();
            try
            {
                var result = _generator.Generate(prompt, options, token =>
                {
                    if (token.Logprob is not null) logprobs.Add(token.Logprob);
                    if (token.Text.Length == 0) return;
                    channel.Writer.TryWrite(new GenerationUpdate(token.Text, logprobs, null, null));
                    sent += token.Text.Length;
                    logprobs = [];
                }, cancellationToken);
                string final = result.Text ?? "";
                channel.Writer.TryWrite(new GenerationUpdate(final.Length > sent ? final[sent..] : "", logprobs, result.FinishReason, result.Tokens.Length));
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

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is null && serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() { }
}
