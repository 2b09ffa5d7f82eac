using System.Globalization;
using System.Text;
using DeepSeekSharp.Distillation;
using System.Text.Json.Nodes;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Cli.Serving;

/// <summary>
/// One choice of a response, fed the pieces of its generation: each piece becomes a streamed chunk's choice, and
/// <see cref="Whole"/> is the choice of a non-streamed response. Log-probabilities take OpenAI's two shapes: chat's
/// <c>content</c> entries (<c>token</c>, <c>logprob</c>, <c>bytes</c>, <c>top_logprobs</c>) and completions' parallel
/// arrays (<c>tokens</c>, <c>token_logprobs</c>, <c>top_logprobs</c>, <c>text_offset</c>, the offsets counting
/// characters of the choice's text).
/// </summary>
internal sealed class OpenAiChoice(bool chat, int index, HfTokenizer tokenizer, bool withLogprobs)
{
    /// <summary>A token of the choice; Logprob is null only for an echoed prompt's first token (nothing precedes it).</summary>
    private readonly record struct Entry(int Id, TokenLogprob? Logprob, int TextOffset);

    private readonly StringBuilder _text = new();
    private readonly List<Entry> _entries = [];
    private readonly Decoder _utf8 = Encoding.UTF8.GetDecoder();
    private int _decodedChars;
    private bool _roleSent;
    private string? _finishReason;

    /// <summary>Completions with <c>echo</c>: the prompt, before anything generated.</summary>
    /// <param name="promptLogprobs">entry i for prompt token i + 1 (see <see cref="EchoLogprobs"/>), when log-probabilities are asked for</param>
    public JsonObject Echo(OpenAiPrompt prompt, TokenLogprob[]? promptLogprobs)
    {
        int from = _entries.Count;
        _text.Append(prompt.Text);
        if (withLogprobs)
            for (int i = 0; i < prompt.Ids.Length; i++) AddEntry(prompt.Ids[i], i == 0 ? null : promptLogprobs![i - 1]);
        return Chunk(prompt.Text, from);
    }

    /// <summary>An echoed prompt's log-probabilities from its scores: entry i for prompt token i + 1 with the <paramref name="top"/> most likely ids.</summary>
    public static TokenLogprob[] EchoLogprobs(OpenAiPrompt prompt, TeacherScores scores, int top)
    {
        var result = new TokenLogprob[prompt.Ids.Length - 1];
        for (int r = 0; r < result.Length; r++)
        {
            var listed = new (int, double)[top];
            for (int i = 0; i < top; i++) listed[i] = (scores.Top!.Ids[r * scores.Top.K + i], scores.Top.LogProbs[r * scores.Top.K + i]);
            result[r] = new TokenLogprob(prompt.Ids[r + 1], scores.ChosenLogprobs[r], listed);
        }
        return result;
    }

    /// <summary>
    /// vLLM's <c>prompt_logprobs</c>: null for the first token, then per prompt token a dictionary from token id (a string, as
    /// JSON keys are) to <c>{"logprob", "rank", "decoded_token"}</c>: the prompt token first, then the <paramref name="k"/> most
    /// likely ids in order (ranks 1..k; a prompt token among them appears once, with its place there as its rank).
    /// </summary>
    public JsonArray PromptLogprobs(OpenAiPrompt prompt, TeacherScores scores, int k)
    {
        var rows = new JsonArray { null };
        for (int r = 0; r + 1 < prompt.Ids.Length; r++)
        {
            int token = prompt.Ids[r + 1], rank = scores.ChosenRanks[r];
            int stride = scores.Top?.K ?? 0;
            for (int i = 0; i < k; i++)
                if (scores.Top!.Ids[r * stride + i] == token) { rank = i + 1; break; }
            var row = new JsonObject { [token.ToString(CultureInfo.InvariantCulture)] = Entry(token, scores.ChosenLogprobs[r], rank) };
            for (int i = 0; i < k; i++)
            {
                int id = scores.Top!.Ids[r * stride + i];
                if (id != token) row[id.ToString(CultureInfo.InvariantCulture)] = Entry(id, scores.Top.LogProbs[r * stride + i], i + 1);
            }
            rows.Add(row);
        }
        return rows;

        JsonObject Entry(int id, float logprob, int rank) => new() { ["logprob"] = Number(logprob), ["rank"] = rank, ["decoded_token"] = Describe(id).Text };
    }

    /// <summary>Adds a piece of the generation; returns the choice of the chunk that streams it.</summary>
    public JsonObject Add(GenerationUpdate update)
    {
        int from = _entries.Count;
        _text.Append(update.Text);
        foreach (var logprob in update.Logprobs) AddEntry(logprob.Token, logprob);
        _finishReason = update.FinishReason ?? _finishReason;
        return Chunk(update.Text, from);
    }

    public JsonObject Whole() => chat
        ? new JsonObject
        {
            ["index"] = index,
            ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = _text.ToString(), ["refusal"] = null },
            ["logprobs"] = Logprobs(0), ["finish_reason"] = _finishReason,
        }
        : new JsonObject { ["index"] = index, ["text"] = _text.ToString(), ["logprobs"] = Logprobs(0), ["finish_reason"] = _finishReason };

    private JsonObject Chunk(string text, int from)
    {
        if (!chat) return new JsonObject { ["index"] = index, ["text"] = text, ["logprobs"] = Logprobs(from), ["finish_reason"] = _finishReason };
        var delta = new JsonObject();
        if (!_roleSent) delta["role"] = "assistant";
        if (text.Length > 0) delta["content"] = text;
        _roleSent = true;
        return new JsonObject { ["index"] = index, ["delta"] = delta, ["logprobs"] = Logprobs(from), ["finish_reason"] = _finishReason };
    }

    private void AddEntry(int id, TokenLogprob? logprob)
    {
        _entries.Add(new Entry(id, logprob, _decodedChars));
        // Offsets count whole characters: a character split over tokens starts at the token holding its first byte.
        var bytes = Describe(id).Bytes;
        _decodedChars += _utf8.GetChars(bytes, 0, bytes.Length, new char[bytes.Length + 2], 0, flush: false);
    }

    /// <summary>The log-probabilities of the entries from <paramref name="from"/> on, in the endpoint's shape; null when not asked for.</summary>
    private JsonObject? Logprobs(int from)
    {
        if (!withLogprobs) return null;
        var entries = _entries.Skip(from).ToList();
        if (chat)
            return new JsonObject
            {
                ["content"] = new JsonArray(entries.Select(e => (JsonNode)ChatEntry(e.Id, e.Logprob!.Logprob, e.Logprob.Top)).ToArray()),
                ["refusal"] = null,
            };
        return new JsonObject
        {
            ["tokens"] = new JsonArray(entries.Select(e => (JsonNode)Describe(e.Id).Text).ToArray()),
            ["token_logprobs"] = new JsonArray(entries.Select(e => e.Logprob is null ? null : Number(e.Logprob.Logprob)).ToArray()),
            ["top_logprobs"] = new JsonArray(entries.Select(e => e.Logprob is null ? null : (JsonNode)TopDictionary(e.Logprob)).ToArray()),
            ["text_offset"] = new JsonArray(entries.Select(e => (JsonNode)e.TextOffset).ToArray()),
        };
    }

    private JsonObject ChatEntry(int id, double logprob, IReadOnlyList<(int Token, double Logprob)>? top)
    {
        var (text, bytes) = Describe(id);
        var entry = new JsonObject { ["token"] = text, ["logprob"] = Number(logprob), ["bytes"] = new JsonArray(bytes.Select(b => (JsonNode)(int)b).ToArray()) };
        if (top is not null) entry["top_logprobs"] = new JsonArray(top.Select(t => (JsonNode)ChatEntry(t.Token, t.Logprob, null)).ToArray());
        return entry;
    }

    /// <summary>Completions list the k most likely tokens and always the chosen one (so up to k + 1 entries), as OpenAI documents.</summary>
    private JsonObject TopDictionary(TokenLogprob logprob)
    {
        var top = new JsonObject();
        foreach (var (id, value) in logprob.Top.Append((logprob.Token, logprob.Logprob)))
        {
            string text = Describe(id).Text;
            if (!top.ContainsKey(text)) top[text] = Number(value);
        }
        return top;
    }

    /// <summary>A token as text, or as OpenAI shows a piece of a character ("bytes:\xe2\x80"), and its bytes.</summary>
    private (string Text, byte[] Bytes) Describe(int id)
    {
        // An id the model has and the tokenizer lacks (a padded vocabulary) is shown as vLLM shows ids: "token_id:N".
        if (tokenizer.IdToToken(id) is null) return ("token_id:" + id.ToString(CultureInfo.InvariantCulture), []);
        string text = tokenizer.Decode([id]);
        if (!text.Contains('\uFFFD')) return (text, Encoding.UTF8.GetBytes(text));
        var bytes = new List<byte>();
        foreach (char c in tokenizer.IdToToken(id) ?? "")
            if (ByteLevel.TryGetByte(c, out byte b)) bytes.Add(b);
        return ("bytes:" + string.Concat(bytes.Select(b => $"\\x{b:x2}")), bytes.ToArray());
    }

    /// <summary>JSON has no infinities: an impossible token gets OpenAI's floor of -9999.</summary>
    private static JsonNode Number(double value) => JsonValue.Create(double.IsFinite(value) ? value : -9999.0);
}
