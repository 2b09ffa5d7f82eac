using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Tokenization;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Cli.Serving;

/// <summary>An error as OpenAI reports it: the HTTP status and <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
/// <param name="param">the request field at fault, e.g. <c>messages[0].role</c>, or null</param>
/// <param name="code">a machine-readable reason, e.g. <c>invalid_type</c>, or null</param>
public sealed class OpenAiException(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error")
    : DeepSeekSharpException(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;

    public JsonObject ToJson() => new() { ["error"] = new JsonObject { ["message"] = Message, ["type"] = Type, ["param"] = Param, ["code"] = Code } };
}

/// <summary>One prompt of a request: its ids, and its text (what <c>echo</c> returns).</summary>
public sealed record OpenAiPrompt(int[] Ids, string Text);

/// <summary>
/// A <c>/v1/chat/completions</c> or <c>/v1/completions</c> request, read and checked in one place before anything
/// runs: every field the server reads is type-checked (a wrong one is a 400 naming it in <c>param</c>), a parameter
/// this server cannot honour is refused unless it has its default value, and every prompt must fit the context.
/// </summary>
/// <param name="Prompts">one for chat; one or more for completions (a prompt array)</param>
/// <param name="N">choices per prompt</param>
/// <param name="TopLogprobs">null: no log-probabilities; k: each token's with the k most likely beside it</param>
/// <param name="Echo">completions: the prompt is returned before the completion</param>
/// <param name="PromptLogprobs">completions, vLLM's <c>prompt_logprobs</c>: each choice carries the prompt's log-probabilities with this many top ids per position</param>
public sealed record OpenAiRequest(bool Chat, IReadOnlyList<OpenAiPrompt> Prompts, ChatOptions Sampling, int N, bool Stream, bool IncludeUsage,
    int? TopLogprobs, bool Echo, int? PromptLogprobs = null)
{
    private static readonly string[] Roles = ["system", "developer", "user", "assistant", "tool"];

    /// <summary>Parameters with no implementation here: accepted only at their default so that no client silently gets other than it asked for.</summary>
    private static readonly (string Name, Func<JsonNode, bool> IsDefault, string Why)[] Unsupported =
    [
        ("presence_penalty", IsZero, "only 0 is supported"),
        ("frequency_penalty", IsZero, "only 0 is supported"),
        ("logit_bias", n => n is JsonObject { Count: 0 }, "logit bias is not supported"),
        ("tools", n => n is JsonArray { Count: 0 }, "tool definitions are not supported (the DeepSeek-V3 chat template does not render them)"),
        ("functions", n => n is JsonArray { Count: 0 }, "function definitions are not supported"),
        ("tool_choice", n => StringIs(n, "none", "auto"), "only \"none\" and \"auto\" are supported"),
        ("function_call", n => StringIs(n, "none", "auto"), "only \"none\" and \"auto\" are supported"),
        ("response_format", n => n is JsonObject o && StringIs(o["type"], "text"), "only {\"type\": \"text\"} is supported"),
        ("suffix", n => StringIs(n, ""), "suffix (insertion) is not supported"),
        ("audio", _ => false, "audio output is not supported"),
        ("prediction", _ => false, "predicted outputs are not supported"),
    ];

    /// <summary>Generation settings for one choice: choice j of a seeded request samples with seed + j, so choices differ and each is reproducible.</summary>
    public GenerationOptions GenerationFor(DeepSeekChatClient client, OpenAiPrompt prompt, int choice)
    {
        var options = client.Options(Sampling, prompt.Ids.Length);
        int room = Math.Max(0, client.MaxContext - prompt.Ids.Length - 1);
        return options with
        {
            MaxNewTokens = Math.Min(options.MaxNewTokens, room),
            Sampling = options.Sampling with { Seed = options.Sampling.Seed is int s ? unchecked(s + choice) : null },
            TopLogprobs = TopLogprobs,
        };
    }

    /// <param name="maxLogprobs">the most top ids a completions request may ask for per position (vLLM's <c>--max-logprobs</c>)</param>
    public static OpenAiRequest Parse(JsonObject body, bool chat, DeepSeekChatClient client, HfTokenizer tokenizer, int maxLogprobs = 20)
    {
        foreach (var (name, isDefault, why) in Unsupported)
            if (body[name] is JsonNode value && !isDefault(value))
                throw new OpenAiException(400, $"Unsupported value for '{name}': {why}.", name, "unsupported_parameter");
        var prompts = chat ? [ChatPrompt(body, client)] : CompletionPrompts(body, client, tokenizer);
        string promptParam = chat ? "messages" : "prompt";
        foreach (var p in prompts)
            if (p.Ids.Length >= client.MaxContext)
                throw new OpenAiException(400, $"This model's maximum context length is {client.MaxContext} tokens, but the {promptParam} has {p.Ids.Length} tokens.",
                    promptParam, "context_length_exceeded");

        int? maxTokens = IntField(body, "max_tokens", 0, int.MaxValue) ?? IntField(body, "max_completion_tokens", 0, int.MaxValue);
        double? temperature = Number(body, "temperature");
        if (temperature is < 0) throw Invalid("temperature", $"Invalid 'temperature': expected a value ≥ 0, but got {temperature}.");
        double? topP = Number(body, "top_p");
        if (topP is <= 0 or > 1) throw Invalid("top_p", $"Invalid 'top_p': expected a value in (0, 1], but got {topP}.");
        long? seed = body["seed"] is null ? null : Long(body["seed"], "seed");
        int n = IntField(body, "n", 1, 128) ?? 1;
        if (!chat && IntField(body, "best_of", 1, 128) is int bestOf && bestOf != n)
            throw new OpenAiException(400, "Unsupported value for 'best_of': only best_of = n is supported.", "best_of", "unsupported_parameter");

        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = false;
        if (body["stream_options"] is JsonNode streamOptions)
        {
            if (!stream) throw Invalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
            if (streamOptions is not JsonObject so) throw WrongType("stream_options", "an object", streamOptions);
            includeUsage = Bool(so, "include_usage", "stream_options.") ?? false;
        }

        int? topLogprobs;
        if (chat)
        {
            bool logprobs = Bool(body, "logprobs") ?? false;
            int? top = IntField(body, "top_logprobs", 0, 20);
            if (top is not null && !logprobs) throw Invalid("top_logprobs", "'top_logprobs' needs 'logprobs' to be true.");
            topLogprobs = logprobs ? top ?? 0 : null;
        }
        else topLogprobs = Logprobs(body, "logprobs", "sample", maxLogprobs);
        bool echo = !chat && (Bool(body, "echo") ?? false);
        // vLLM's extension: the prompt's own log-probabilities beside the choice (what distillation clients read).
        int? promptLogprobs = chat ? null : Logprobs(body, "prompt_logprobs", "prompt", maxLogprobs);
        if (promptLogprobs is not null && stream)
            throw Invalid("prompt_logprobs", "`prompt_logprobs` are not available when `stream=True`.");

        var sampling = new ChatOptions
        {
            MaxOutputTokens = maxTokens,
            Temperature = (float?)temperature,
            TopP = (float?)topP,
            Seed = seed,
            StopSequences = Stops(body["stop"]),
        };
        return new OpenAiRequest(chat, prompts, sampling, n, stream, includeUsage, topLogprobs, echo, promptLogprobs);
    }

    /// <summary>A completions log-probability count, capped as vLLM caps it (and refused with vLLM's words, which clients quote).</summary>
    private static int? Logprobs(JsonObject body, string name, string kind, int max)
    {
        int? value = IntField(body, name, 0, int.MaxValue);
        if (value > max) throw Invalid(name, $"Requested {kind} logprobs of {value}, which is greater than max allowed: {max}");
        return value;
    }

    private static OpenAiPrompt ChatPrompt(JsonObject body, DeepSeekChatClient client)
    {
        if (body["messages"] is not JsonArray messages) throw WrongType("messages", "an array", body["messages"]);
        if (messages.Count == 0) throw Invalid("messages", "'messages' must be a non-empty array.");
        var list = new List<ChatTemplate.Message>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            string at = $"messages[{i}]";
            if (messages[i] is not JsonObject m) throw WrongType(at, "an object", messages[i]);
            string role = String(m["role"], at + ".role");
            if (!Roles.Contains(role))
                throw Invalid(at + ".role", $"Invalid value: '{role}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.");
            IReadOnlyList<ChatTemplate.ToolCall>? calls = role == "assistant" && m["tool_calls"] is not null ? ToolCalls(m["tool_calls"], at + ".tool_calls") : null;
            string? content = m["content"] is null && calls is { Count: > 0 } ? null : Content(m["content"], at + ".content");
            list.Add(new ChatTemplate.Message(role, content, calls));
        }
        var ids = client.EncodeChat(list);
        return new OpenAiPrompt(ids, "");
    }

    /// <summary>A message's text: a string, or an array of text parts (joined by newlines, as vLLM does).</summary>
    private static string Content(JsonNode? node, string at)
    {
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        if (node is not JsonArray parts) throw WrongType(at, "a string or an array of content parts", node);
        var texts = new List<string>(parts.Count);
        for (int j = 0; j < parts.Count; j++)
        {
            string partAt = $"{at}[{j}]";
            if (parts[j] is not JsonObject part) throw WrongType(partAt, "an object", parts[j]);
            string type = String(part["type"], partAt + ".type");
            if (type != "text") throw Invalid(partAt + ".type", $"Invalid value: '{type}'. This model reads text only: supported content parts are of type 'text'.");
            texts.Add(String(part["text"], partAt + ".text"));
        }
        return string.Join("\n", texts);
    }

    private static List<ChatTemplate.ToolCall> ToolCalls(JsonNode? node, string at)
    {
        if (node is not JsonArray array) throw WrongType(at, "an array", node);
        var calls = new List<ChatTemplate.ToolCall>(array.Count);
        for (int k = 0; k < array.Count; k++)
        {
            string callAt = $"{at}[{k}]";
            if (array[k] is not JsonObject call) throw WrongType(callAt, "an object", array[k]);
            if (call["function"] is not JsonObject function) throw WrongType(callAt + ".function", "an object", call["function"]);
            string type = call["type"] is null ? "function" : String(call["type"], callAt + ".type");
            calls.Add(new ChatTemplate.ToolCall(String(function["name"], callAt + ".function.name"), String(function["arguments"], callAt + ".function.arguments"), type));
        }
        return calls;
    }

    /// <summary>A string, an array of strings (one prompt each), an array of token ids, or an array of such arrays.</summary>
    private static List<OpenAiPrompt> CompletionPrompts(JsonObject body, DeepSeekChatClient client, HfTokenizer tokenizer)
    {
        const string Expected = "a string, an array of strings, an array of token ids or an array of token-id arrays";
        var node = body["prompt"];
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return [FromText(v.GetValue<string>(), "prompt")];
        if (node is not JsonArray array) throw WrongType("prompt", Expected, node);
        if (array.Count == 0) throw Invalid("prompt", "'prompt' must not be empty.");
        if (array.All(e => e?.GetValueKind() == JsonValueKind.Number)) return [FromIds(array, "prompt")];
        var prompts = new List<OpenAiPrompt>(array.Count);
        for (int i = 0; i < array.Count; i++)
            prompts.Add(array[i] switch
            {
                JsonValue s when s.GetValueKind() == JsonValueKind.String => FromText(s.GetValue<string>(), $"prompt[{i}]"),
                JsonArray ids => FromIds(ids, $"prompt[{i}]"),
                var other => throw WrongType($"prompt[{i}]", "a string or an array of token ids", other),
            });
        return prompts;

        OpenAiPrompt FromText(string text, string at)
        {
            var ids = tokenizer.Encode(text);
            if (ids.Length == 0) throw Invalid(at, $"'{at}' is empty.");
            return new OpenAiPrompt(ids, text);
        }

        OpenAiPrompt FromIds(JsonArray array, string at)
        {
            if (array.Count == 0) throw Invalid(at, $"'{at}' is empty.");
            var ids = new int[array.Count];
            for (int i = 0; i < ids.Length; i++)
            {
                ids[i] = Int(array[i], $"{at}[{i}]", 0, int.MaxValue);
                if (ids[i] >= client.VocabSize) throw Invalid($"{at}[{i}]", $"Invalid token id {ids[i]}: the vocabulary is [0, {client.VocabSize}).");
            }
            return new OpenAiPrompt(ids, tokenizer.Decode(ids));
        }
    }

    private static List<string> Stops(JsonNode? node) => node switch
    {
        null => [],
        JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
        JsonArray a => a.Select((s, i) => String(s, $"stop[{i}]")).ToList(),
        _ => throw WrongType("stop", "a string or an array of strings", node),
    };

    private static OpenAiException WrongType(string param, string expected, JsonNode? got) =>
        new(400, $"Invalid type for '{param}': expected {expected}, but got {KindOf(got)} instead.", param, "invalid_type");

    private static OpenAiException Invalid(string param, string message) => new(400, message, param, "invalid_value");

    private static string KindOf(JsonNode? node) => node?.GetValueKind() switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    private static string String(JsonNode? node, string param) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw WrongType(param, "a string", node);

    /// <summary>An optional field (absent or null: null).</summary>
    private static bool? Bool(JsonObject o, string name, string prefix = "") => o[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        var other => throw WrongType(prefix + name, "a boolean", other),
    };

    private static double? Number(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d) => d,
        var other => throw WrongType(name, "a number", other),
    };

    private static int? IntField(JsonObject o, string name, int min, int max) => o[name] is null ? null : Int(o[name], name, min, max);

    private static int Int(JsonNode? node, string param, int min, int max)
    {
        long value = Long(node, param);
        if (value < min || value > max) throw Invalid(param, $"Invalid '{param}': expected an integer in [{min}, {max}], but got {value}.");
        return (int)value;
    }

    private static long Long(JsonNode? node, string param) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out long l) ? l : throw WrongType(param, "an integer", node);

    private static bool IsZero(JsonNode n) => n is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d) && d == 0;

    private static bool StringIs(JsonNode? n, params string[] allowed) =>
        n is JsonValue v && v.GetValueKind() == JsonValueKind.String && allowed.Contains(v.GetValue<string>());
}
