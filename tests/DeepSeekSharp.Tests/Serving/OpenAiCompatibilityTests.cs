using System.Net;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference;

namespace DeepSeekSharp.Tests.Serving;

/// <summary>
/// The request shapes the official <c>openai</c> Python client sends (written out as JSON) and OpenAI's response
/// shapes: stop strings, content parts, prompt arrays, n, logprobs, echo, streamed usage, developer and tool roles.
/// Greedy decoding (the server's default) makes every run of a request give the same text, so one request's answer
/// can be checked against another's.
/// </summary>
public sealed class OpenAiCompatibilityTests(TinyServer server) : IClassFixture<TinyServer>
{
    private const string Chat = "/v1/chat/completions", Completions = "/v1/completions";

    private static string Quote(string s) => JsonSerializer.Serialize(s);

    private static string ChatBody(string extra) => $$"""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","max_tokens":24{{extra}}}""";

    private static string CompletionBody(string extra) => $$"""{"model":"tiny","prompt":"Hello","max_tokens":24{{extra}}}""";

    private static JsonElement Choice(JsonElement response, int i = 0) => response.GetProperty("choices")[i];

    private static string Text(JsonElement choice) =>
        choice.TryGetProperty("message", out var m) ? m.GetProperty("content").GetString()! : choice.GetProperty("text").GetString()!;

    /// <summary>The text of a streamed chunk's choice (chat deltas may have no content).</summary>
    private static string Piece(JsonElement choice) =>
        choice.TryGetProperty("delta", out var d) ? d.TryGetProperty("content", out var c) ? c.GetString()! : "" : choice.GetProperty("text").GetString()!;

    /// <summary>A stop string taken from an unstopped answer: two characters from the second on, first occurring there.</summary>
    private static (string Stop, int At) StopIn(string text)
    {
        for (int k = 1; k + 2 <= text.Length; k++)
        {
            string s = text.Substring(k, 2);
            if (!s.Contains('\uFFFD') && !s.Any(char.IsSurrogate) && text.IndexOf(s, StringComparison.Ordinal) == k) return (s, k);
        }
        throw new InvalidOperationException("no usable stop string in " + text);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task StopStringsEndTheTextBeforeThemStreamedOrNot(bool chat)
    {
        string path = chat ? Chat : Completions;
        Func<string, string> body = chat ? ChatBody : CompletionBody;
        var (_, unstopped) = await server.Post(path, body(""));
        string full = Text(Choice(unstopped));
        var (stop, at) = StopIn(full);

        var (status, stopped) = await server.Post(path, body($",\"stop\":{Quote(stop)}"));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(full[..at], Text(Choice(stopped)));
        Assert.Equal("stop", Choice(stopped).GetProperty("finish_reason").GetString());

        // Streamed, nothing of the stop string goes out, not even its first character while it could still complete.
        var events = await server.PostStream(path, body($",\"stop\":[{Quote(stop)}],\"stream\":true"));
        Assert.Equal(full[..at], string.Concat(events.Select(e => Piece(Choice(e)))));
        Assert.Equal("stop", Choice(events[^1]).GetProperty("finish_reason").GetString());

        // A stop string whose start shows up but that never completes: the held-back text is sent in the end.
        string neverCompletes = stop[..1] + "\u0001\u0002";
        events = await server.PostStream(path, body($",\"stop\":[{Quote(neverCompletes)}],\"stream\":true"));
        Assert.Equal(full, string.Concat(events.Select(e => Piece(Choice(e)))));
        Assert.Equal("length", Choice(events[^1]).GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task CompletionTokensCountTheGeneratedTokens()
    {
        // The answer has pieces of characters (decoded as U+FFFD), so re-encoding its text would not count 24.
        var (_, unstopped) = await server.Post(Completions, CompletionBody(",\"logprobs\":0"));
        Assert.Contains('\uFFFD', Text(Choice(unstopped)));
        Assert.Equal("length", Choice(unstopped).GetProperty("finish_reason").GetString());
        Assert.Equal(24, unstopped.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("Hello".Length, unstopped.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var ids = Choice(unstopped).GetProperty("logprobs").GetProperty("tokens").EnumerateArray().Select(t => server.TokenId(t.GetString()!)).ToArray();
        Assert.Equal(24, ids.Length);

        // With a stop string the tokens that spelled it were generated too, though their text is cut.
        var (stop, _) = StopIn(Text(Choice(unstopped)));
        int generated = Enumerable.Range(1, ids.Length).First(m => server.Tokenizer.Decode(ids[..m]).Contains(stop, StringComparison.Ordinal));
        var (_, stopped) = await server.Post(Completions, CompletionBody($",\"stop\":{Quote(stop)}"));
        var usage = stopped.GetProperty("usage");
        Assert.Equal(generated, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + generated, usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task ModelsHaveARealCreationTime()
    {
        using var doc = JsonDocument.Parse(await server.Http.GetStringAsync("/v1/models"));
        long created = doc.RootElement.GetProperty("data")[0].GetProperty("created").GetInt64();
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.InRange(created, now - 3600, now);
    }

    [Fact]
    public async Task ContentPartsAreReadAsText()
    {
        var (status, parts) = await server.Post(Chat, """
            {"messages":[{"role":"system","content":[{"type":"text","text":"Be brief."}]},{"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}]}],"model":"tiny","max_tokens":8}
            """);
        Assert.Equal(HttpStatusCode.OK, status);
        var (_, plain) = await server.Post(Chat, """
            {"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hel\nlo"}],"model":"tiny","max_tokens":8}
            """);
        Assert.Equal(plain.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), parts.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(Text(Choice(plain)), Text(Choice(parts)));
    }

    [Fact]
    public async Task PromptArraysAreSeveralPromptsOrTokenIds()
    {
        var (_, romeoAlone) = await server.Post(Completions, """{"model":"tiny","prompt":"ROMEO:","max_tokens":6}""");
        var (_, julietAlone) = await server.Post(Completions, """{"model":"tiny","prompt":"JULIET:","max_tokens":6}""");
        string romeo = Text(Choice(romeoAlone)), juliet = Text(Choice(julietAlone));
        Assert.NotEqual(romeo, juliet);

        var (status, both) = await server.Post(Completions, """{"model":"tiny","prompt":["ROMEO:","JULIET:"],"max_tokens":6}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(2, both.GetProperty("choices").GetArrayLength());
        Assert.Equal([0, 1], both.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal([romeo, juliet], both.GetProperty("choices").EnumerateArray().Select(Text));
        Assert.Equal("ROMEO:".Length + "JULIET:".Length, both.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(romeoAlone.GetProperty("usage").GetProperty("completion_tokens").GetInt32() + julietAlone.GetProperty("usage").GetProperty("completion_tokens").GetInt32(),
            both.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // The byte tokenizer's ids of "ROMEO:" and "JULIET:" are their bytes.
        var (_, ids) = await server.Post(Completions, """{"model":"tiny","prompt":[82,79,77,69,79,58],"max_tokens":6}""");
        Assert.Equal(romeo, Text(Choice(ids)));
        Assert.Equal(6, ids.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var (_, idLists) = await server.Post(Completions, """{"model":"tiny","prompt":[[82,79,77,69,79,58],[74,85,76,73,69,84,58]],"max_tokens":6}""");
        Assert.Equal([romeo, juliet], idLists.GetProperty("choices").EnumerateArray().Select(Text));
    }

    [Fact]
    public async Task NChoicesHaveTheirOwnIndexAndSeed()
    {
        var (status, three) = await server.Post(Completions, """{"model":"tiny","prompt":"ROMEO:","max_tokens":8,"n":3,"seed":5,"temperature":1.0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var choices = three.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal(3, choices.Select(Text).Distinct().Count());
        // Choice j samples with seed + j: each is reproducible on its own.
        for (int j = 0; j < 3; j++)
        {
            var (_, single) = await server.Post(Completions, $$"""{"model":"tiny","prompt":"ROMEO:","max_tokens":8,"seed":{{5 + j}},"temperature":1.0}""");
            Assert.Equal(Text(Choice(single)), Text(choices[j]));
        }
    }

    [Fact]
    public async Task ChatLogprobsHaveOpenAisShape()
    {
        var (status, response) = await server.Post(Chat, ChatBody(",\"logprobs\":true,\"top_logprobs\":3"));
        Assert.Equal(HttpStatusCode.OK, status);
        var content = Choice(response).GetProperty("logprobs").GetProperty("content").EnumerateArray().ToList();
        Assert.Equal(response.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), content.Count);
        var bytes = new List<byte>();
        foreach (var entry in content)
        {
            double logprob = entry.GetProperty("logprob").GetDouble();
            Assert.InRange(logprob, -50, 0);
            var top = entry.GetProperty("top_logprobs").EnumerateArray().ToList();
            Assert.Equal(3, top.Count);
            var topLogprobs = top.Select(t => t.GetProperty("logprob").GetDouble()).ToList();
            Assert.Equal(topLogprobs.OrderByDescending(x => x), topLogprobs);
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(entry.GetProperty("token").GetString(), top[0].GetProperty("token").GetString());
            Assert.Equal(logprob, topLogprobs[0], 12);
            bytes.AddRange(entry.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32()));
        }
        Assert.Equal(Text(Choice(response)), Encoding.UTF8.GetString(bytes.ToArray()));
        var (_, without) = await server.Post(Chat, ChatBody(""));
        Assert.Equal(JsonValueKind.Null, Choice(without).GetProperty("logprobs").ValueKind);
    }

    [Fact]
    public async Task CompletionLogprobsAndEchoAreTheModelsLogSoftmax()
    {
        var (status, response) = await server.Post(Completions, """{"model":"tiny","prompt":"ROMEO:","max_tokens":4,"logprobs":2,"echo":true}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var choice = Choice(response);
        Assert.StartsWith("ROMEO:", Text(choice));
        var logprobs = choice.GetProperty("logprobs");
        var ids = logprobs.GetProperty("tokens").EnumerateArray().Select(t => server.TokenId(t.GetString()!)).ToArray();
        Assert.Equal(10, ids.Length);
        Assert.Equal("ROMEO:"u8.ToArray().Select(b => (int)b), ids[..6]);
        var tokenLogprobs = logprobs.GetProperty("token_logprobs").EnumerateArray().ToList();
        var top = logprobs.GetProperty("top_logprobs").EnumerateArray().ToList();
        Assert.Equal(JsonValueKind.Null, tokenLogprobs[0].ValueKind); // nothing precedes the first prompt token
        Assert.Equal(JsonValueKind.Null, top[0].ValueKind);
        Assert.Equal(Enumerable.Range(0, 7), logprobs.GetProperty("text_offset").EnumerateArray().Take(7).Select(o => o.GetInt32()));

        // The echoed prompt (ids 1..5): the model's training forward of the prompt alone, log-softmax over the whole
        // vocabulary (as vLLM scores prompts); the generated ids (6..9): the decoder's, over the ids the tokenizer can produce.
        var prompt = ids[..6];
        var forward = server.Model.Forward(prompt, DeepSeekSharp.Models.DeepSeekV3.SequenceBatch.Training(1, prompt.Length)).Logits;
        var decoder = new CachedDecoder(server.Model);
        var (logits, _) = decoder.Forward([(ids, decoder.NewCache())]);
        int vocab = server.Model.Config.VocabSize, usable = server.Tokenizer.VocabSize;
        for (int i = 1; i < ids.Length; i++)
        {
            bool echoed = i < prompt.Length;
            var row = (echoed ? forward.Span.Slice((i - 1) * vocab, vocab) : logits.Span.Slice((i - 1) * vocab, usable)).ToArray().Select(z => (double)z).ToArray();
            double max = row.Max(), logNormalizer = max + Math.Log(row.Sum(z => Math.Exp(z - max)));
            Assert.Equal(row[ids[i]] - logNormalizer, tokenLogprobs[i].GetDouble(), echoed ? 5 : 3);
            var listed = top[i].EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
            Assert.InRange(listed.Count, 2, 3); // the two most likely, and the chosen token when it is not one of them
            Assert.Contains(logprobs.GetProperty("tokens")[i].GetString()!, listed.Keys);
            var twoBest = row.Select((z, id) => (z, id)).OrderByDescending(x => x.z).Take(2).ToList();
            Assert.Equal(twoBest[0].z - logNormalizer, listed.Values.Max(), echoed ? 5 : 3);
        }
    }

    [Fact]
    public async Task EchoStreamsThePromptFirst()
    {
        var (_, whole) = await server.Post(Completions, """{"model":"tiny","prompt":"ROMEO:","max_tokens":6,"echo":true}""");
        var events = await server.PostStream(Completions, """{"model":"tiny","prompt":"ROMEO:","max_tokens":6,"echo":true,"stream":true}""");
        Assert.Equal("ROMEO:", Piece(Choice(events[0])));
        Assert.Equal(Text(Choice(whole)), string.Concat(events.Select(e => Piece(Choice(e)))));
    }

    [Fact]
    public async Task StreamedChoicesAndTheFinalUsageChunk()
    {
        const string Request = """{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","max_tokens":6,"n":2,"logprobs":true,"top_logprobs":1""";
        var events = await server.PostStream(Chat, Request + ""","stream":true,"stream_options":{"include_usage":true}}""");
        var (_, whole) = await server.Post(Chat, Request + "}");

        var last = events[^1];
        Assert.Equal(0, last.GetProperty("choices").GetArrayLength());
        var usage = last.GetProperty("usage");
        Assert.Equal(whole.GetProperty("usage").GetRawText(), usage.GetRawText());
        var chunks = events[..^1];
        Assert.All(chunks, e => Assert.Equal(JsonValueKind.Null, e.GetProperty("usage").ValueKind));
        Assert.All(chunks, e => Assert.Equal("chat.completion.chunk", e.GetProperty("object").GetString()));
        int streamedTokens = 0;
        for (int index = 0; index < 2; index++)
        {
            var mine = chunks.Select(e => Choice(e)).Where(c => c.GetProperty("index").GetInt32() == index).ToList();
            Assert.Equal("assistant", mine[0].GetProperty("delta").GetProperty("role").GetString());
            Assert.Equal(Text(Choice(whole, index)), string.Concat(mine.Select(Piece)));
            Assert.NotEqual(JsonValueKind.Null, mine[^1].GetProperty("finish_reason").ValueKind);
            streamedTokens += mine.Sum(c => c.GetProperty("logprobs").GetProperty("content").GetArrayLength());
        }
        Assert.Equal(usage.GetProperty("completion_tokens").GetInt32(), streamedTokens);

        // Without include_usage there is no usage chunk and no usage field.
        events = await server.PostStream(Chat, Request + ""","stream":true}""");
        Assert.All(events, e => Assert.False(e.TryGetProperty("usage", out _)));
        Assert.All(events, e => Assert.Equal(1, e.GetProperty("choices").GetArrayLength()));
    }

    [Fact]
    public async Task DeveloperAndToolMessagesAreRenderedLikeTheJinjaTemplate()
    {
        var (status, response) = await server.Post(Chat, """
            {"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"18C"}],"model":"tiny","max_tokens":4}
            """);
        Assert.Equal(HttpStatusCode.OK, status);
        // Rendered by jinja2 from DeepSeek-V3's chat_template (developer given as system, which the template knows).
        const string Expected = "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>";
        Assert.Equal(server.Tokenizer.Encode(Expected).Length, response.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }
}
