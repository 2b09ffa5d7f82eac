using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.WebUtilities;
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
    /// <summary>The most top ids a completions request may ask for per position (<c>logprobs</c>, <c>prompt_logprobs</c>); vLLM's <c>--max-logprobs</c>, same default.</summary>
    public int MaxLogprobs { get; init; } = 20;
}

/// <summary>
/// An OpenAI-compatible HTTP API on ASP.NET Core (Kestrel): <c>GET /v1/models</c>, <c>POST /v1/chat/completions</c>
/// and <c>POST /v1/completions</c>, with server-sent-event streaming (<c>"stream": true</c>), optional bearer API
/// key, a request-size limit, and bounded concurrency (429 when the queue is full). Requests are read by
/// <see cref="OpenAiRequest"/>; every error, whatever raised it (a bad field, an unknown route, a bug), leaves
/// through one middleware as OpenAI's <c>{"error": {"message", "type", "param", "code"}}</c>.
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
        long started = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        app.Use(async (ctx, next) =>
        {
            try
            {
                if (options.ApiKey is not null && ctx.Request.Headers.Authorization.ToString() != "Bearer " + options.ApiKey)
                    throw new OpenAiException(401, "invalid or missing API key", code: "invalid_api_key", type: "authentication_error");
                await next();
                // Routing answers unknown paths and methods with a status and no body.
                if (!ctx.Response.HasStarted && ctx.Response.StatusCode >= 400)
                {
                    string target = $"{ctx.Request.Method} {ctx.Request.Path}";
                    throw ctx.Response.StatusCode switch
                    {
                        404 => new OpenAiException(404, $"Invalid URL ({target})", code: "unknown_url"),
                        405 => new OpenAiException(405, $"Invalid method for URL ({target})", code: "method_not_allowed"),
                        int status => new OpenAiException(status, ReasonPhrases.GetReasonPhrase(status)),
                    };
                }
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
            {
                // The client went away: generation was cancelled, nothing to send.
            }
            catch (Exception e)
            {
                await Fail(ctx, e);
            }
        });

        app.MapGet("/v1/models", () => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = client.ModelId, ["object"] = "model", ["created"] = started, ["owned_by"] = "deepseeksharp" }),
        }));

        app.MapPost("/v1/chat/completions", ctx => Handle(ctx, chat: true));
        app.MapPost("/v1/completions", ctx => Handle(ctx, chat: false));
        return app;

        async Task Handle(HttpContext ctx, bool chat)
        {
            var request = OpenAiRequest.Parse(await ReadBody(ctx, options), chat, client, tokenizer, options.MaxLogprobs);
            if (Interlocked.Increment(ref waiting) > options.MaxConcurrent + options.MaxQueued)
            {
                Interlocked.Decrement(ref waiting);
                throw new OpenAiException(429, "too many concurrent requests", code: "rate_limit_exceeded", type: "rate_limit_error");
            }
            try
            {
                await gate.WaitAsync(ctx.RequestAborted);
                try { await Respond(ctx, request); }
                finally { gate.Release(); }
            }
            finally
            {
                Interlocked.Decrement(ref waiting);
            }
        }

        async Task Respond(HttpContext ctx, OpenAiRequest request)
        {
            string id = (request.Chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            string objectName = request.Chat ? request.Stream ? "chat.completion.chunk" : "chat.completion" : "text_completion";
            int promptTokens = request.Prompts.Sum(p => p.Ids.Length), completionTokens = 0;
            JsonObject Envelope(params JsonNode[] choices) => new()
            {
                ["id"] = id, ["object"] = objectName, ["created"] = created, ["model"] = client.ModelId, ["choices"] = new JsonArray(choices),
            };
            JsonObject Usage() => new() { ["prompt_tokens"] = promptTokens, ["completion_tokens"] = completionTokens, ["total_tokens"] = promptTokens + completionTokens };
            async Task Send(JsonObject chunk)
            {
                if (request.IncludeUsage && !chunk.ContainsKey("usage")) chunk["usage"] = null;
                await ctx.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", ctx.RequestAborted);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            }

            if (request.Stream)
            {
                ctx.Response.ContentType = "text/event-stream";
                ctx.Response.Headers.CacheControl = "no-cache";
            }
            var choices = new List<JsonNode>();
            // Choices run one after another in this request's slot; choice p·n + j is prompt p's j-th.
            for (int p = 0; p < request.Prompts.Count; p++)
            {
                var prompt = request.Prompts[p];
                // One scoring pass per prompt serves the echoed logprobs and prompt_logprobs of all its choices.
                int? echoTop = request.Echo ? request.TopLogprobs : null;
                var scores = echoTop is not null || request.PromptLogprobs is not null
                    ? client.ScorePrompt(prompt.Ids, Math.Max(echoTop ?? 0, request.PromptLogprobs ?? 0)) : null;
                for (int j = 0; j < request.N; j++)
                {
                    var choice = new OpenAiChoice(request.Chat, p * request.N + j, tokenizer, request.TopLogprobs is not null);
                    if (request.Echo)
                    {
                        var echoed = choice.Echo(prompt, echoTop is int top ? OpenAiChoice.EchoLogprobs(prompt, scores!, top) : null);
                        if (request.Stream) await Send(Envelope(echoed));
                    }
                    await foreach (var update in client.StreamTextAsync(prompt.Ids, request.GenerationFor(client, prompt, j), ctx.RequestAborted))
                    {
                        var piece = choice.Add(update);
                        completionTokens += update.CompletionTokens ?? 0;
                        if (request.Stream) await Send(Envelope(piece));
                    }
                    if (request.Stream) continue;
                    var whole = choice.Whole();
                    if (request.PromptLogprobs is int k) whole["prompt_logprobs"] = choice.PromptLogprobs(prompt, scores!, k);
                    choices.Add(whole);
                }
            }
            if (!request.Stream)
            {
                var response = Envelope([.. choices]);
                response["usage"] = Usage();
                await ctx.Response.WriteAsJsonAsync(response, ctx.RequestAborted);
                return;
            }
            if (request.IncludeUsage)
            {
                var last = Envelope();
                last["usage"] = Usage();
                await Send(last);
            }
            await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
        }
    }

    private static async Task<JsonObject> ReadBody(HttpContext ctx, ServerOptions options)
    {
        try
        {
            using var reader = new StreamReader(ctx.Request.Body, Encoding.UTF8);
            string text = await reader.ReadToEndAsync(ctx.RequestAborted);
            return JsonNode.Parse(text) as JsonObject ?? throw new JsonException("the body is not a JSON object");
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413)
        {
            throw new OpenAiException(413, $"request body exceeds {options.MaxRequestBytes} bytes", code: "request_too_large");
        }
        catch (JsonException e)
        {
            throw new OpenAiException(400, $"We could not parse the JSON body of your request: {e.Message.Split('\n')[0]}", code: "invalid_json");
        }
    }

    /// <summary>
    /// The one way out for errors: before the response has started, the status and the JSON error body; once an
    /// event stream has started, an error event (OpenAI's clients raise it), since the status is already sent.
    /// A user error is a 400 with its message; anything else is a bug, reported without its internals.
    /// </summary>
    private static async Task Fail(HttpContext ctx, Exception e)
    {
        var error = e switch
        {
            OpenAiException o => o,
            DeepSeekSharpException d => new OpenAiException(400, d.Message),
            _ => new OpenAiException(500, $"The server had an error while processing the request ({e.GetType().Name}).", type: "server_error"),
        };
        if (!ctx.Response.HasStarted)
        {
            ctx.Response.Clear();
            ctx.Response.StatusCode = error.Status;
            await ctx.Response.WriteAsJsonAsync(error.ToJson());
        }
        else if (ctx.Response.ContentType == "text/event-stream")
        {
            try { await ctx.Response.WriteAsync("data: " + error.ToJson().ToJsonString() + "\n\n"); }
            catch (Exception) when (ctx.RequestAborted.IsCancellationRequested) { }
        }
        else ctx.Abort();
    }
}
