using System.Net;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Tests.Serving;

/// <summary>Every error is OpenAI's <c>{"error": {"message", "type", "param", "code"}}</c> with the right status.</summary>
public sealed class OpenAiErrorTests(TinyServer server) : IClassFixture<TinyServer>
{
    private static void AssertOpenAiError(JsonElement body, string type, string? param, string? code)
    {
        var error = body.GetProperty("error");
        Assert.Equal(["message", "type", "param", "code"], error.EnumerateObject().Select(p => p.Name));
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.Equal(type, error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").ValueKind == JsonValueKind.Null ? null : error.GetProperty("param").GetString());
        Assert.Equal(code, error.GetProperty("code").ValueKind == JsonValueKind.Null ? null : error.GetProperty("code").GetString());
    }

    // Bodies as the openai Python client serialises them (model and messages first, then the keyword arguments).
    [Theory]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","stop":[null]}""", "stop[0]", "invalid_type")]
    [InlineData("""{"messages":[{"role":"","content":"Hi"}],"model":"tiny"}""", "messages[0].role", "invalid_value")]
    [InlineData("""{"messages":[{"role":"function","content":"Hi","name":"f"}],"model":"tiny"}""", "messages[0].role", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":null}],"model":"tiny"}""", "messages[0].content", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":7}],"model":"tiny"}""", "messages[0].content", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}],"model":"tiny"}""", "messages[0].content[0].type", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":[{"type":"text"}]}],"model":"tiny"}""", "messages[0].content[0].text", "invalid_type")]
    [InlineData("""{"messages":["Hi"],"model":"tiny"}""", "messages[0]", "invalid_type")]
    [InlineData("""{"messages":{"role":"user"},"model":"tiny"}""", "messages", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","max_tokens":"12"}""", "max_tokens", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","max_tokens":1.5}""", "max_tokens", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","temperature":"hot"}""", "temperature", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","temperature":-1}""", "temperature", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","top_p":0}""", "top_p", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","n":0}""", "n", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","stream":"yes"}""", "stream", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","stream_options":{"include_usage":true}}""", "stream_options", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","stream":true,"stream_options":{"include_usage":1}}""", "stream_options.include_usage", "invalid_type")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","top_logprobs":2}""", "top_logprobs", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","logprobs":true,"top_logprobs":21}""", "top_logprobs", "invalid_value")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","presence_penalty":0.5}""", "presence_penalty", "unsupported_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}""", "tools", "unsupported_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}],"model":"tiny","response_format":{"type":"json_object"}}""", "response_format", "unsupported_parameter")]
    [InlineData("""{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f"}}]}],"model":"tiny"}""", "messages[0].tool_calls[0].function.arguments", "invalid_type")]
    public async Task MalformedChatFieldsAre400sNamingTheField(string body, string param, string code)
    {
        var (status, error) = await server.Post("/v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        AssertOpenAiError(error, "invalid_request_error", param, code);
    }

    [Theory]
    [InlineData("""{"model":"tiny","prompt":{"text":"x"}}""", "prompt", "invalid_type")]
    [InlineData("""{"model":"tiny","prompt":[]}""", "prompt", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":""}""", "prompt", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":[82,79,9999]}""", "prompt[2]", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":[82,-1]}""", "prompt[1]", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":["ROMEO:",[82,"x"]]}""", "prompt[1][1]", "invalid_type")]
    [InlineData("""{"model":"tiny","prompt":["ROMEO:",null]}""", "prompt[1]", "invalid_type")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","logprobs":21}""", "logprobs", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","prompt_logprobs":21}""", "prompt_logprobs", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","prompt_logprobs":2,"stream":true}""", "prompt_logprobs", "invalid_value")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","logprobs":true}""", "logprobs", "invalid_type")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","echo":"yes"}""", "echo", "invalid_type")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","best_of":3}""", "best_of", "unsupported_parameter")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","suffix":"end"}""", "suffix", "unsupported_parameter")]
    [InlineData("""{"model":"tiny","prompt":"ROMEO:","stop":["a",3]}""", "stop[1]", "invalid_type")]
    public async Task MalformedCompletionFieldsAre400sNamingTheField(string body, string param, string code)
    {
        var (status, error) = await server.Post("/v1/completions", body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        AssertOpenAiError(error, "invalid_request_error", param, code);
    }

    [Fact]
    public async Task APromptLongerThanTheContextIsAContextLengthError()
    {
        string prompt = new('a', 600); // the tiny model's context is 512 tokens, one per byte here
        var (status, error) = await server.Post("/v1/completions", $$"""{"model":"tiny","prompt":"{{prompt}}"}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        AssertOpenAiError(error, "invalid_request_error", "prompt", "context_length_exceeded");
    }

    [Theory]
    [InlineData("POST", "/v1/nothing", HttpStatusCode.NotFound, "unknown_url")]
    [InlineData("GET", "/", HttpStatusCode.NotFound, "unknown_url")]
    [InlineData("GET", "/v1/chat/completions", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    [InlineData("DELETE", "/v1/models", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    public async Task UnknownRoutesAndMethodsGetJsonErrors(string method, string path, HttpStatusCode expected, string code)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (method == "POST") request.Content = new StringContent("{}", Encoding.UTF8, "application/json");
        using var response = await server.Http.SendAsync(request);
        Assert.Equal(expected, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        AssertOpenAiError(doc.RootElement, "invalid_request_error", null, code);
    }

    [Fact]
    public async Task AnUnexpectedExceptionIsA500WithoutItsInternals()
    {
        using var response = await server.Http.GetAsync("/test/fault");
        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        AssertOpenAiError(doc.RootElement, "server_error", null, null);
        Assert.DoesNotContain("internal detail", doc.RootElement.GetRawText());

        // Once an event stream has started the status is sent: the error comes as an event, as OpenAI's clients expect.
        string stream = await server.Http.GetStringAsync("/test/fault-mid-stream");
        var events = stream.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: {}", events[0]);
        using var error = JsonDocument.Parse(events[1]["data: ".Length..]);
        AssertOpenAiError(error.RootElement, "server_error", null, null);
    }

    [Fact]
    public async Task TransportAndAuthenticationErrorsHaveTheSameShape()
    {
        var (status, error) = await server.Post("/v1/chat/completions", "{not json");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        AssertOpenAiError(error, "invalid_request_error", null, "invalid_json");

        (status, error) = await server.Post("/v1/completions", "{\"prompt\":\"" + new string('a', 200_000) + "\"}");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
        AssertOpenAiError(error, "invalid_request_error", null, "request_too_large");

        using var anonymous = new HttpClient { BaseAddress = server.Http.BaseAddress };
        using var unauthorized = await anonymous.PostAsync("/v1/completions", new StringContent("""{"prompt":"x"}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        using var doc = JsonDocument.Parse(await unauthorized.Content.ReadAsStringAsync());
        AssertOpenAiError(doc.RootElement, "authentication_error", null, "invalid_api_key");
    }
}
