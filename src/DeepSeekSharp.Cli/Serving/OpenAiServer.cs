using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DeepSeekSharp.Cli.Serving;

/// <summary>Limits and binding of <c>dss serve</c>.</summary>
public sealed record ServerOptions
{
    public string Host { get; init; } = "127.0.0.1";
    public int Port { get; init; } = 8080;
    public string? ApiKey { get; init; }
    public long MaxRequestBytes { get; init; } = 1 << 20;
    /// <summary>Generations running at once (the CPU is the bottleneck); more wait in a bounded queue.</summary>
    public int MaxConcurrent { get; init; } = 2;
    public int MaxQueued { get; init; } = 16;
}

/// <summary>
/// An OpenAI-compatible HTTP API on ASP.NET Core (Kestrel): <c>GET /v1/models</c>, <c>POST /v1/chat/completions</c>
/// and <c>POST /v1/completions</c>, with server-sent-event streaming (<c>"stream": true</c>), optional bearer API
/// key, a request-size limit, and bounded concurrency (429 when the queue is full). Errors are JSON
/// <c>{"error": {"message", "type"}}</c>.
/// </summary>
public static class OpenAiServer
{
    public static WebApplication Build(DeepSeekChatClient client, HfTokenizer tokenizer, ServerOptions options)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
        });
        builder.WebHost.UseUrls($"http://{(options.Host.Contains(':') ? $"[{options.Host}]" : options.Host)}:{options.Port}");
        var app = builder.Build();
        var gate = new SemaphoreSlim(options.MaxConcurrent);
        int waiting = 0;

        app.Use(async (ctx, next) =>
        {
            if (options.ApiKey is not null && ctx.Request.Headers.Authorization.ToString() != "Bearer " + options.ApiKey)
            {
                await Error(ctx, 401, "invalid or missing API key", "authentication_error");
                return;
            }
            await next();
        });

        app.MapGet("/v1/models", () => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = client.ModelId, ["object"] = "model", ["created"] = 0, ["owned_by"] = "deepseeksharp" }),
        }));

        app.MapPost("/v1/chat/completions", ctx => Handle(ctx, chat: true));
        app.MapPost("/v1/completions", ctx => Handle(ctx, chat: false));
        return app;

        async Task Handle(HttpContext ctx, bool chat)
        {
            JsonObject body;
            try
            {
                using var reader = new StreamReader(ctx.Request.Body, Encoding.UTF8);
                string text = await reader.ReadToEndAsync(ctx.RequestAborted);
                body = JsonNode.Parse(text) as JsonObject ?? throw new JsonException("the body is not a JSON object");
            }
            catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413)
            {
                await Error(ctx, 413, $"request body exceeds {options.MaxRequestBytes} bytes", "invalid_request_error");
                return;
            }
            catch (JsonException e)
            {
                await Error(ctx, 400, $"malformed JSON: {e.Message.Split('\n')[0]}", "invalid_request_error");
                return;
            }
            int[] prompt;
            GenerationOptions gen;
            bool stream;
            try
            {
                (prompt, gen, stream) = Parse(body, chat);
            }
            catch (Exception e) when (e is DeepSeekSharpException or InvalidOperationException or FormatException or JsonException)
            {
                await Error(ctx, 400, e.Message, "invalid_request_error");
                return;
            }
            if (Interlocked.Increment(ref waiting) > options.MaxConcurrent + options.MaxQueued)
            {
                Interlocked.Decrement(ref waiting);
                await Error(ctx, 429, "too many concurrent requests", "rate_limit_error");
                return;
            }
            try
            {
                await gate.WaitAsync(ctx.RequestAborted);
                try { await Respond(ctx, chat, prompt, gen, stream); }
                finally { gate.Release(); }
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
            {
                // The client went away: generation was cancelled, nothing to send.
            }
            catch (DeepSeekSharpException e) when (!ctx.Response.HasStarted)
            {
                await Error(ctx, 400, e.Message, "invalid_request_error");
            }
            finally
            {
                Interlocked.Decrement(ref waiting);
            }
        }

        (int[] Prompt, GenerationOptions Options, bool Stream) Parse(JsonObject body, bool chat)
        {
            int[] prompt;
            if (chat)
            {
                if (body["messages"] is not JsonArray msgs || msgs.Count == 0) throw new DeepSeekSharpException("'messages' must be a non-empty array");
                var messages = msgs.Select(m => new ChatMessage(new ChatRole(m?["role"]?.GetValue<string>() ?? throw new DeepSeekSharpException("a message has no 'role'")),
                    m["content"]?.GetValue<string>() ?? throw new DeepSeekSharpException("a message has no string 'content'"))).ToList();
                prompt = client.EncodeChat(messages);
            }
            else
            {
                string text = body["prompt"]?.GetValue<string>() ?? throw new DeepSeekSharpException("'prompt' must be a string");
                prompt = tokenizer.Encode(text);
                if (prompt.Length == 0) throw new DeepSeekSharpException("'prompt' is empty");
            }
            if (prompt.Length >= client.MaxContext) throw new DeepSeekSharpException($"the prompt has {prompt.Length} tokens; the model's context is {client.MaxContext}");
            var stops = body["stop"] switch
            {
                null => [],
                JsonValue v => [v.GetValue<string>()],
                JsonArray a => a.Select(x => x!.GetValue<string>()).ToList(),
                _ => throw new DeepSeekSharpException("'stop' must be a string or an array of strings"),
            };
            var chatOptions = new ChatOptions
            {
                MaxOutputTokens = body["max_tokens"]?.GetValue<int>() ?? body["max_completion_tokens"]?.GetValue<int>(),
                Temperature = body["temperature"]?.GetValue<float>(),
                TopP = body["top_p"]?.GetValue<float>(),
                Seed = body["seed"]?.GetValue<long>(),
                StopSequences = stops,
            };
            if (chatOptions.MaxOutputTokens is < 0) throw new DeepSeekSharpException("'max_tokens' must be ≥ 0");
            var gen = client.Options(chatOptions, prompt.Length);
            if (prompt.Length + gen.MaxNewTokens + 1 > client.MaxContext)
                gen = gen with { MaxNewTokens = Math.Max(0, client.MaxContext - prompt.Length - 1) };
            gen.Sampling.Validate();
            return (prompt, gen, body["stream"]?.GetValue<bool>() ?? false);
        }

        async Task Respond(HttpContext ctx, bool chat, int[] prompt, GenerationOptions gen, bool stream)
        {
            string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (!stream)
            {
                var sb = new StringBuilder();
                string finish = "length";
                int completionTokens = 0;
                await foreach (var update in client.StreamTextAsync(prompt, gen, ctx.RequestAborted))
                {
                    sb.Append(update.Text);
                    if (update.FinishReason is not null) finish = update.FinishReason;
                    completionTokens += update.CompletionTokens ?? 0;
                }
                var choice = chat
                    ? new JsonObject { ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = sb.ToString() }, ["finish_reason"] = finish }
                    : new JsonObject { ["index"] = 0, ["text"] = sb.ToString(), ["finish_reason"] = finish };
                await ctx.Response.WriteAsJsonAsync(new JsonObject
                {
                    ["id"] = id, ["object"] = chat ? "chat.completion" : "text_completion", ["created"] = created, ["model"] = client.ModelId,
                    ["choices"] = new JsonArray(choice),
                    ["usage"] = new JsonObject { ["prompt_tokens"] = prompt.Length, ["completion_tokens"] = completionTokens, ["total_tokens"] = prompt.Length + completionTokens },
                }, ctx.RequestAborted);
                return;
            }
            ctx.Response.ContentType = "text/event-stream";
            ctx.Response.Headers.CacheControl = "no-cache";
            bool first = true;
            await foreach (var (delta, _, reason, _) in client.StreamTextAsync(prompt, gen, ctx.RequestAborted))
            {
                JsonObject choice;
                if (chat)
                {
                    var d = new JsonObject();
                    if (first) d["role"] = "assistant";
                    if (delta.Length > 0) d["content"] = delta;
                    choice = new JsonObject { ["index"] = 0, ["delta"] = d, ["finish_reason"] = reason };
                }
                else choice = new JsonObject { ["index"] = 0, ["text"] = delta, ["finish_reason"] = reason };
                first = false;
                var chunk = new JsonObject
                {
                    ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created, ["model"] = client.ModelId,
                    ["choices"] = new JsonArray(choice),
                };
                await ctx.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", ctx.RequestAborted);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            }
            await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
        }
    }

    private static Task Error(HttpContext ctx, int status, string message, string type)
    {
        ctx.Response.StatusCode = status;
        return ctx.Response.WriteAsJsonAsync(new JsonObject { ["error"] = new JsonObject { ["message"] = message, ["type"] = type } });
    }
}
