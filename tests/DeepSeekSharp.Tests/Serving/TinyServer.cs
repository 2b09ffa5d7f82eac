using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Cli.Serving;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace DeepSeekSharp.Tests.Serving;

/// <summary>
/// A server on loopback over a random tiny model with the byte tokenizer (one token per UTF-8 byte, so token
/// counts can be read off the text), shared by a test class. Requests are written as the official <c>openai</c>
/// Python client sends them.
/// </summary>
public sealed class TinyServer : IAsyncLifetime
{
    public const string Key = "sk-test-key";
    private string _dir = null!;
    private WebApplication _app = null!;

    public HttpClient Http { get; private set; } = null!;
    public HfTokenizer Tokenizer { get; private set; } = null!;
    public DeepSeekModel Model { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        _dir = TestPaths.TempDir();
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        node["vocab_size"] = 264;
        node["hidden_size"] = 64;
        node["intermediate_size"] = 128;
        Model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(Model, 1);
        string tokPath = Path.Combine(_dir, "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokPath);
        Tokenizer = HfTokenizer.Load(tokPath);
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var client = new DeepSeekChatClient(new CachedDecoder(Model), Tokenizer, "tiny");
        _app = OpenAiServer.Build(client, Tokenizer, new ServerOptions { Port = port, ApiKey = Key, MaxRequestBytes = 64 * 1024, MaxConcurrent = 2, MaxQueued = 4 });
        // Stand-ins for bugs, before and after a response has started: the server's error path must still answer.
        _app.MapGet("/test/fault", string () => throw new InvalidOperationException("internal detail"));
        _app.MapGet("/test/fault-mid-stream", async (HttpContext ctx) =>
        {
            ctx.Response.ContentType = "text/event-stream";
            await ctx.Response.WriteAsync("data: {}\n\n");
            await ctx.Response.Body.FlushAsync();
            throw new InvalidOperationException("internal detail");
        });
        await _app.StartAsync();
        Http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromMinutes(2) };
        Http.DefaultRequestHeaders.Authorization = new("Bearer", Key);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>POSTs a JSON body; the status and the parsed response.</summary>
    public async Task<(HttpStatusCode Status, JsonElement Body)> Post(string path, string json)
    {
        using var response = await Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        string text = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(text);
        return (response.StatusCode, doc.RootElement.Clone());
    }

    /// <summary>POSTs a streaming request; the events before <c>data: [DONE]</c> (which must end the stream).</summary>
    public async Task<List<JsonElement>> PostStream(string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1].Trim());
        return events[..^1].Select(e =>
        {
            Assert.StartsWith("data: ", e);
            using var doc = JsonDocument.Parse(e["data: ".Length..]);
            return doc.RootElement.Clone();
        }).ToList();
    }

    /// <summary>The ids of a completion's logprobs tokens (text, or "bytes:\xNN" for a piece of a character).</summary>
    public int TokenId(string token)
    {
        if (token.StartsWith("bytes:\\x", StringComparison.Ordinal)) return Convert.ToInt32(token["bytes:\\x".Length..], 16);
        var ids = Tokenizer.Encode(token);
        Assert.Single(ids);
        return ids[0];
    }
}
