using System.Text.Json;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.FineTuning.Templates;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// The Jinja renderer against a reference engine: Fixtures/sft/jinja-cases.jsonl holds templates, their variables and
/// the output of @huggingface/jinja (tools/chat-template-fixtures/make_fixtures.mjs), covering the chat formats of other
/// model families, HF's trim_blocks/lstrip_blocks whitespace rules and expression corner cases.
/// </summary>
public class JinjaTemplateTests
{
    public static TheoryData<int> CaseNumbers()
    {
        var data = new TheoryData<int>();
        int n = File.ReadLines(TestPaths.Fixture(Path.Combine("sft", "jinja-cases.jsonl"))).Count(l => l.Length > 0);
        for (int i = 0; i < n; i++) data.Add(i);
        return data;
    }

    [Theory]
    [MemberData(nameof(CaseNumbers))]
    public void RendersAsTheReferenceEngine(int caseNumber)
    {
        string line = File.ReadLines(TestPaths.Fixture(Path.Combine("sft", "jinja-cases.jsonl"))).Where(l => l.Length > 0).ElementAt(caseNumber);
        using var doc = JsonDocument.Parse(line);
        var variables = new Dictionary<string, object?>();
        foreach (var p in doc.RootElement.GetProperty("vars").EnumerateObject()) variables[p.Name] = JinjaTemplate.FromJson(p.Value);
        string rendered = JinjaTemplate.Parse(doc.RootElement.GetProperty("template").GetString()!).Render(variables);
        Assert.Equal(doc.RootElement.GetProperty("output").GetString(), rendered);
    }

    [Fact]
    public void PythonValuesPrintAsPythonDoes()
    {
        // transformers renders with Python's jinja2: True, None, and list reprs with single quotes.
        string rendered = JinjaTemplate.Parse("{{ true }} {{ none }} {{ [1, 'a'] }} {{ 'a' ~ none }}").Render(new Dictionary<string, object?>());
        Assert.Equal("True None [1, 'a'] aNone", rendered);
    }

    [Fact]
    public void BuiltInDeepSeekV3IsTheTokenizerConfigsTemplate()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer", "tokenizer_config.json")));
        Assert.Equal(BuiltInChatTemplates.DeepSeekV3, doc.RootElement.GetProperty("chat_template").GetString());
    }

    [Fact]
    public void ToolCallsRenderAsTheJinja2CheckedRenderer()
    {
        // Inference.ChatTemplate is checked against jinja2's rendering of the same template (ChatTemplateTests); the
        // Jinja renderer must give the same text for tool calls and outputs across turns.
        var calls = new List<object?>
        {
            Dict(("type", "function"), ("function", Dict(("name", "get_weather"), ("arguments", "{\"city\": \"Paris\"}")))),
            Dict(("type", "function"), ("function", Dict(("name", "get_weather"), ("arguments", "{\"city\": \"Rome\"}")))),
        };
        var messages = new List<object?>
        {
            Dict(("role", "system"), ("content", "Use tools.")),
            Dict(("role", "user"), ("content", "Weather in Paris and Rome?")),
            Dict(("role", "assistant"), ("content", null), ("tool_calls", calls)),
            Dict(("role", "tool"), ("content", "18C")),
            Dict(("role", "tool"), ("content", "24C")),
            Dict(("role", "assistant"), ("content", "Paris 18C, Rome 24C.")),
            Dict(("role", "user"), ("content", "Thanks")),
        };
        string jinja = JinjaTemplate.Parse(BuiltInChatTemplates.DeepSeekV3).Render(new Dictionary<string, object?>
        {
            ["messages"] = messages, ["bos_token"] = DeepSeekSharp.Inference.ChatTemplate.Bos, ["add_generation_prompt"] = true,
        });
        var paris = new DeepSeekSharp.Inference.ChatTemplate.ToolCall("get_weather", "{\"city\": \"Paris\"}");
        var rome = new DeepSeekSharp.Inference.ChatTemplate.ToolCall("get_weather", "{\"city\": \"Rome\"}");
        DeepSeekSharp.Inference.ChatTemplate.Message[] conversation =
        [
            new("system", "Use tools."), new("user", "Weather in Paris and Rome?"), new("assistant", null, [paris, rome]),
            new("tool", "18C"), new("tool", "24C"), new("assistant", "Paris 18C, Rome 24C."), new("user", "Thanks"),
        ];
        string expected = DeepSeekSharp.Inference.ChatTemplate.Render(conversation, addGenerationPrompt: true);
        Assert.Equal(expected, jinja);
    }

    [Theory]
    [InlineData("a\n{% include 'x.j2' %}", 2, "the tag 'include' is not supported")]
    [InlineData("{{ x | wordwrap }}", 1, "the filter 'wordwrap' is not supported")]
    [InlineData("{% if x %}open", 1, "missing '{% endif %}'")]
    [InlineData("{{ 'unterminated }}", 1, "never closed")]
    [InlineData("\n\n{{ x is prime }}", 3, "the test 'prime' is not supported")]
    public void UnsupportedSyntaxIsAnErrorNamingTheLine(string template, int line, string message)
    {
        var e = Record.Exception(() => JinjaTemplate.Parse(template).Render(new Dictionary<string, object?> { ["x"] = 1L }));
        var jinja = Assert.IsType<JinjaException>(e);
        Assert.Equal(line, jinja.Line);
        Assert.Contains(message, jinja.Message);
    }

    [Theory]
    [InlineData("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}", "calls nest deeper than 64")]
    [InlineData("{% for i in range(10 ** 12) %}{% endfor %}", "range() of more than 1000000 numbers")]
    [InlineData("\n{{ 'abc'.startswith([1]) }}", "cannot evaluate this")]
    [InlineData("{{ 'abc'.replace(1, 'x') }}", "replace() expects a string, got int")]
    [InlineData("{{ x.y }}", "'x' is undefined")]
    [InlineData("{{ [1] + 'a' }}", "unsupported operand types for +: list and str")]
    public void RunawayOrIllTypedTemplatesAreErrorsNotCrashes(string template, string message)
    {
        var e = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(template).Render(new Dictionary<string, object?>()));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void RaiseExceptionStopsTheRenderingWithTheTemplatesMessage()
    {
        var e = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("ok\n{{ raise_exception('roles must alternate') }}").Render(new Dictionary<string, object?>()));
        Assert.Equal(2, e.Line);
        Assert.Contains("roles must alternate", e.Message);
    }

    [Fact]
    public void SetInsideALoopDoesNotLeakButANamespaceDoes()
    {
        string rendered = JinjaTemplate.Parse("{% set x = 1 %}{% set ns = namespace(y=1) %}{% for i in [1, 2] %}{% set x = 5 %}{% set ns.y = ns.y + i %}{% endfor %}{{ x }} {{ ns.y }}")
            .Render(new Dictionary<string, object?>());
        Assert.Equal("1 4", rendered);
    }

    private static OrderedDictionary<string, object?> Dict(params (string Key, object? Value)[] items)
    {
        var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in items) d[k] = v;
        return d;
    }
}
