using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// An online teacher served over HTTP by <c>dss serve</c> or vLLM (<c>distillation: {teacher_url: ...}</c>). Per batch it sends
/// what Axolotl's online KD collator sends, <c>POST {url}/v1/completions</c> with
/// <c>{"prompt": [[ids], ...], "max_tokens": 0, "echo": true, "prompt_logprobs": K}</c>, and reads each choice's
/// <c>prompt_logprobs</c>: null for token 0, then per token j a dictionary token id → <c>{"logprob", "rank", ...}</c> for the
/// teacher's prediction of token j, i.e. the student's row j − 1. Of each dictionary the K entries of lowest rank are kept
/// (by log-probability, ties to the lower id, where a server gives no ranks), which drops the prompt token itself when it
/// is not among the K most likely.
/// </summary>
public sealed class RemoteTeacher : IDisposable
{
    private readonly HttpClient _http;
    private readonly string _endpoint;
    private readonly int _vocab;

    /// <param name="url">the server's base URL, e.g. http://host:8000 (the path /v1/completions is appended)</param>
    /// <param name="k">log-probabilities per position (Axolotl's <c>kd_online_topk</c>)</param>
    /// <param name="vocab">the student's vocabulary: a teacher id outside it is an error</param>
    public RemoteTeacher(string url, int k, int vocab, TimeSpan timeout)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new DeepSeekSharpException($"distillation.teacher_url '{url}' is not an http:// or https:// URL");
        Url = url.TrimEnd('/');
        _endpoint = Url + "/v1/completions";
        (K, _vocab) = (k, vocab);
        _http = new HttpClient { Timeout = timeout };
        // vLLM and dss serve read the key from here when started with one; Axolotl sends it the same way.
        if (Environment.GetEnvironmentVariable("OPENAI_API_KEY") is { Length: > 0 } key) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
    }

    public string Url { get; }

    public int K { get; }

    /// <summary>
    /// The teacher's top-K of every position of every sequence (one request): sequence i's <see cref="KdSequence"/> has rows for
    /// positions 0 … T − 2 (row p: the teacher's distribution over token p + 1); a position with fewer than K entries is padded
    /// with empty slots (id −1).
    /// </summary>
    public KdSequence[] Fetch(IReadOnlyList<int[]> sequences)
    {
        using var content = new ByteArrayContent(RequestBody(sequences));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, _endpoint) { Content = content };
        HttpResponseMessage response;
        try
        {
            response = _http.Send(request);
        }
        catch (HttpRequestException e)
        {
            throw new DeepSeekSharpException($"distillation.teacher_url {Url}: cannot reach the teacher ({e.Message})");
        }
        catch (TaskCanceledException)
        {
            throw new DeepSeekSharpException($"distillation.teacher_url {Url}: no answer within {_http.Timeout.TotalSeconds:0} s (kd_online_timeout)");
        }
        using (response)
        {
            using var stream = response.Content.ReadAsStream();
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(stream);
            }
            catch (JsonException)
            {
                throw Error($"answered HTTP {(int)response.StatusCode} without a JSON body (is it an OpenAI-compatible server?)");
            }
            using (doc)
            {
                if (!response.IsSuccessStatusCode)
                    throw Error($"answered HTTP {(int)response.StatusCode}: {ErrorMessage(doc.RootElement)}");
                return Read(doc.RootElement, sequences);
            }
        }
    }

    private byte[] RequestBody(IReadOnlyList<int[]> sequences)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartArray("prompt");
            foreach (var ids in sequences)
            {
                w.WriteStartArray();
                foreach (int id in ids) w.WriteNumberValue(id);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteNumber("max_tokens", 0);
            w.WriteBoolean("echo", true);
            w.WriteNumber("prompt_logprobs", K);
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    private KdSequence[] Read(JsonElement root, IReadOnlyList<int[]> sequences)
    {
        if (!root.TryGetProperty("choices", out var choices) || choices.ValueKind != JsonValueKind.Array || choices.GetArrayLength() != sequences.Count)
            throw Error($"answered without {sequences.Count} choice(s) (one per sequence)");
        var result = new KdSequence[sequences.Count];
        int c = 0;
        foreach (var choice in choices.EnumerateArray())
        {
            int index = choice.TryGetProperty("index", out var ix) && ix.TryGetInt32(out int i) ? i : c;
            if ((uint)index >= (uint)result.Length || result[index] is not null) throw Error($"answered with a bad choice index {index}");
            result[index] = Sequence(choice, sequences[index]);
            c++;
        }
        return result;
    }

    /// <summary>One choice's prompt_logprobs as rows of K.</summary>
    private KdSequence Sequence(JsonElement choice, int[] tokens)
    {
        if (!choice.TryGetProperty("prompt_logprobs", out var rows) || rows.ValueKind != JsonValueKind.Array)
            throw Error("answered without prompt_logprobs (the server must support vLLM's prompt_logprobs: dss serve or vllm serve)");
        if (rows.GetArrayLength() != tokens.Length)
            throw Error($"returned {rows.GetArrayLength()} prompt_logprobs positions for a {tokens.Length}-token sequence");
        int n = tokens.Length - 1;
        var ids = new int[n * K];
        var lp = new float[n * K];
        Array.Fill(ids, -1);
        Array.Fill(lp, float.NegativeInfinity);
        var entries = new List<(int Id, float Logprob, int Rank)>();
        int j = 0;
        foreach (var row in rows.EnumerateArray())
        {
            if (j++ == 0) continue; // nothing predicts token 0
            if (row.ValueKind != JsonValueKind.Object) throw Error($"returned no log-probabilities for token {j - 1}");
            entries.Clear();
            bool ranked = true;
            int listed = 0;
            foreach (var e in row.EnumerateObject())
            {
                listed++;
                if (!int.TryParse(e.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id >= _vocab)
                    throw Error($"returned the id '{e.Name}', outside the student's vocabulary [0, {_vocab})");
                if (e.Value.ValueKind != JsonValueKind.Object || !e.Value.TryGetProperty("logprob", out var v) || v.ValueKind != JsonValueKind.Number) continue;
                float logprob = (float)v.GetDouble();
                if (!float.IsFinite(logprob) || logprob <= -9999f) continue; // OpenAI's and vLLM's stand-in for −∞
                int rank = e.Value.TryGetProperty("rank", out var rv) && rv.ValueKind == JsonValueKind.Number ? rv.GetInt32() : 0;
                ranked &= rank > 0;
                entries.Add((id, logprob, rank));
            }
            // OrderBy is stable: equal ranks keep the server's order.
            var kept = (ranked ? entries.OrderBy(e => e.Rank) : entries.OrderByDescending(e => e.Logprob).ThenBy(e => e.Id)).Take(K).ToList();
            // A server that lists fewer than asked caps its log-probabilities (vLLM's --max-logprobs) or served a cached prefix.
            if (listed < K)
                throw Error($"returned {listed} log-probabilities for token {j - 1}, kd_online_topk is {K} (vLLM: start it with --max-logprobs {K}; dss serve: --max-logprobs {K})");
            int r = j - 2;
            for (int i = 0; i < kept.Count; i++) (ids[r * K + i], lp[r * K + i]) = (kept[i].Id, kept[i].Logprob);
        }
        return new KdSequence(tokens, Enumerable.Range(0, n).ToArray(), ids, lp, K);
    }

    private DeepSeekSharpException Error(string what) => new($"distillation.teacher_url {Url}: the teacher {what}");

    private static string ErrorMessage(JsonElement root) =>
        root.ValueKind == JsonValueKind.Object && root.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object && e.TryGetProperty("message", out var m) ? m.ToString()
        : root.ValueKind == JsonValueKind.Object && root.TryGetProperty("message", out var m2) ? m2.ToString()
        : root.GetRawText();

    public void Dispose() => _http.Dispose();
}
