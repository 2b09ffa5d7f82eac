using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Cli.Serving;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;
using Microsoft.AspNetCore.Builder;

namespace DeepSeekSharp.Tests.Serving;

/// <summary>The OpenAI-compatible server over real HTTP on loopback.</summary>
public sealed class OpenAiServerTests : IAsyncLifetime
{
    private WebApplication _app = null!;
    private HttpClient _http = null!;
    private string _dir = null!;
    private const string Key = "sk-test-key";

    public async ValueTask InitializeAsync()
    {
        string dir = _dir = TestPaths.TempDir();
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        node["vocab_size"] = 264;
        node["hidden_size"] = 64;
        node["intermediate_size"] = 128;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(model, 1);
        string tokPath = Path.Combine(dir, "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokPath);
        var tokenizer = HfTokenizer.Load(tokPath);
        int port = FreePort();
        var client = new DeepSeekChatClient(new CachedDecoder(model), tokenizer, "tiny", speculativeMtp: true);
        _app = OpenAiServer.Build(client, tokenizer, new ServerOptions { Port = port, ApiKey = Key, MaxRequestBytes = 64 * 1024, MaxConcurrent = 2, MaxQueued = 4 });
        await _app.StartAsync();
        _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromMinutes(2) };
        _http.DefaultRequestHeaders.Authorization = new("Bearer", Key);
    }

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true); // the test-end hook may have removed it already
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static StringContent Json(string s) => new(s, Encoding.UTF8, "application/json");

    [Fact]
    public async Task ChatCompletionReturnsAnOpenAiShapedResponse()
    {
        var r = await _http.PostAsync("/v1/chat/completions", Json("""{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":12,"seed":3}"""));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
        var choice = doc.RootElement.GetProperty("choices")[0];
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal("chat.completion", doc.RootElement.GetProperty("object").GetString());
        Assert.True(doc.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() > 10);
        Assert.Contains(choice.GetProperty("finish_reason").GetString(), new[] { "stop", "length" });
    }

    [Fact]
    public async Task StreamingSendsServerSentEventsEndingWithDone()
    {
        var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json("""{"prompt":"ROMEO:","max_tokens":10,"stream":true}""") };
        var r = await _http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", r.Content.Headers.ContentType?.MediaType);
        string body = await r.Content.ReadAsStringAsync();
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1].Trim());
        Assert.True(events.Length >= 3);
        string text = string.Concat(events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()));
        // The streamed text equals the non-streamed completion with the same (greedy) settings.
        var whole = await _http.PostAsync("/v1/completions", Json("""{"prompt":"ROMEO:","max_tokens":10}"""));
        using var doc = JsonDocument.Parse(await whole.Content.ReadAsStringAsync());
        Assert.Equal(doc.RootElement.GetProperty("choices")[0].GetProperty("text").GetString(), text);
    }

    [Fact]
    public async Task ConcurrentRequestsAllSucceed()
    {
        var tasks = Enumerable.Range(0, 5).Select(i => _http.PostAsync("/v1/completions", Json($$"""{"prompt":"line {{i}}","max_tokens":8}"""))).ToArray();
        var results = await Task.WhenAll(tasks);
        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
    }

    [Fact]
    public async Task BadRequestsGetClearErrors()
    {
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("/v1/chat/completions", Json("{not json"))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("/v1/chat/completions", Json("""{"messages":[]}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("/v1/completions", Json("""{"prompt":"x","temperature":-1}"""))).StatusCode);
        var big = await _http.PostAsync("/v1/completions", Json("{\"prompt\":\"" + new string('a', 200_000) + "\"}"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, big.StatusCode);
        using var anonymous = new HttpClient { BaseAddress = _http.BaseAddress };
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/v1/models")).StatusCode);
        anonymous.DefaultRequestHeaders.Authorization = new("Bearer", "wrong");
        var wrong = await anonymous.PostAsync("/v1/completions", Json("""{"prompt":"x"}"""));
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        using var err = JsonDocument.Parse(await wrong.Content.ReadAsStringAsync());
        Assert.Equal("authentication_error", err.RootElement.GetProperty("error").GetProperty("type").GetString());
    }

    [Fact]
    public async Task ClientDisconnectingMidStreamLeavesTheServerHealthy()
    {
        for (int i = 0; i < 3; i++)
        {
            using var cts = new CancellationTokenSource();
            var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json("""{"prompt":"abc","max_tokens":200,"stream":true}""") };
            var r = await _http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            var stream = await r.Content.ReadAsStreamAsync(cts.Token);
            var buffer = new byte[64];
            _ = await stream.ReadAsync(buffer, cts.Token); // first bytes arrived
            cts.Cancel();
            r.Dispose();
        }
        // Slots were released: more requests than the concurrency limit still complete.
        var results = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => _http.PostAsync("/v1/completions", Json("""{"prompt":"ok","max_tokens":4}"""))));
        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
    }

    [Fact]
    public async Task ModelsEndpointListsTheModel()
    {
        using var doc = JsonDocument.Parse(await _http.GetStringAsync("/v1/models"));
        Assert.Equal("tiny", doc.RootElement.GetProperty("data")[0].GetProperty("id").GetString());
    }
}

public class ChatClientTests
{
    [Fact]
    public async Task ChatClientAnswersAndStreamsTheSameText()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        node["vocab_size"] = 264;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(model, 5);
        string dir = TestPaths.TempDir();
        string tokPath = Path.Combine(dir, "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokPath);
        Microsoft.Extensions.AI.IChatClient chat = new DeepSeekChatClient(new CachedDecoder(model), HfTokenizer.Load(tokPath), "tiny");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        var messages = new[] { new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, "Hello there") };
        var options = new Microsoft.Extensions.AI.ChatOptions { MaxOutputTokens = 12 };
        var response = await chat.GetResponseAsync(messages, options);
        var streamed = new StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync(messages, options)) streamed.Append(update.Text);
        Assert.Equal(response.Text, streamed.ToString());
        Assert.Equal(12, response.Usage!.OutputTokenCount);
        Assert.Same(chat, chat.GetService(typeof(DeepSeekChatClient)));
    }

    [Fact]
    public void FunctionCallsAndResultsAreRenderedAsToolCallsAndOutputs()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        node["vocab_size"] = 264;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        string dir = TestPaths.TempDir();
        ByteTokenizer.SaveAsHfJson(Path.Combine(dir, "tokenizer.json"));
        var tokenizer = HfTokenizer.Load(Path.Combine(dir, "tokenizer.json"));
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        var client = new DeepSeekChatClient(new CachedDecoder(model), tokenizer, "tiny");
        Microsoft.Extensions.AI.ChatMessage[] messages =
        [
            new(Microsoft.Extensions.AI.ChatRole.User, "Weather in Paris?"),
            new(Microsoft.Extensions.AI.ChatRole.Assistant, [new Microsoft.Extensions.AI.FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris" })]),
            new(Microsoft.Extensions.AI.ChatRole.Tool, [new Microsoft.Extensions.AI.FunctionResultContent("call_1", "18C")]),
        ];
        // Rendered by jinja2 from DeepSeek-V3's chat_template with the same conversation in OpenAI's message form.
        const string Expected = "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>";
        Assert.Equal(tokenizer.Encode(Expected), client.EncodeChat(messages));
    }
}
