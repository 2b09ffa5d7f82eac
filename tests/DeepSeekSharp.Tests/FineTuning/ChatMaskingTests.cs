using System.Text;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.FineTuning.Templates;
using DeepSeekSharp.Tokenization;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// Loss placement for templates other than DeepSeek's, with the byte tokenizer (token k = byte k, so the expected
/// labels are byte ranges of the rendered string found by hand here, not by the code under test).
/// </summary>
public class ChatMaskingTests
{
    private static ChatTemplate Template(string jinja) => ChatTemplate.Resolve("jinja", jinja, SftTokenizer.Byte());

    private static OrderedDictionary<string, object?> Message(string role, string content) =>
        new(StringComparer.Ordinal) { ["role"] = role, ["content"] = content };

    /// <summary>Labels that train exactly the bytes of <paramref name="trained"/> (each a substring located by its occurrence).</summary>
    private static int[] ExpectedLabels(string text, params (string Part, int Occurrence)[] trained)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var labels = Enumerable.Repeat(TokenizedExample.IgnoreIndex, bytes.Length).ToArray();
        foreach (var (part, occurrence) in trained)
        {
            int at = -1;
            for (int k = 0; k <= occurrence; k++) at = text.IndexOf(part, at + 1, StringComparison.Ordinal);
            int start = Encoding.UTF8.GetByteCount(text.AsSpan(0, at)), length = Encoding.UTF8.GetByteCount(part);
            for (int b = start; b < start + length; b++) labels[b] = bytes[b];
        }
        return labels;
    }

    [Fact]
    public void ChatMlStyleHeadersStayUntrainedEvenWhenTheContentRepeatsThem()
    {
        // An assistant whose answer is the word "assistant": the header before it holds the same text.
        var template = Template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}");
        var messages = new List<IDictionary<string, object?>> { Message("user", "Who are you?"), Message("assistant", "assistant"), Message("user", "ok"), Message("assistant", "fine") };
        var example = ChatMasking.Render(template, messages, ["assistant"], "turn").Tokenize(SftTokenizer.Byte().Tokenizer);
        string text = "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nassistant<|im_end|>\n<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\nfine<|im_end|>\n";
        Assert.Equal(Encoding.UTF8.GetBytes(text).Select(b => (int)b), example.InputIds);
        Assert.Equal(ExpectedLabels(text, ("assistant", 1), ("fine", 0)), example.Labels);
    }

    [Fact]
    public void TemplatesWhoseEarlierTextDependsOnLaterTurnsAreSearchedInOrder()
    {
        // The message count comes first, so rendering fewer messages is no prefix of the whole: the contents are found in order.
        var template = Template("{{ messages|length }}:{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}");
        var messages = new List<IDictionary<string, object?>> { Message("user", "a"), Message("assistant", "a"), Message("user", "b"), Message("assistant", "b") };
        var example = ChatMasking.Render(template, messages, ["assistant"], "turn").Tokenize(SftTokenizer.Byte().Tokenizer);
        string text = "4:[user:a][assistant:a][user:b][assistant:b]";
        Assert.Equal(ExpectedLabels(text, ("a]", 1), ("b]", 1)).Select((l, k) => text[k] == ']' ? -100 : l), example.Labels);
    }

    [Theory]
    [InlineData("{% for m in messages %}{% if m.content.endswith('?') %}(q){% endif %}[{{ m.role }}:{{ m.content }}]{% endfor %}", "(q)[user:Who?](q)[assistant:assistant?][user:ok][assistant:fine]")]
    [InlineData("{{ messages|length }}:{% for m in messages %}{% if m.content.endswith('?') %}(q){% endif %}[{{ m.content }}]{% endfor %}", "4:(q)[Who?](q)[assistant?][ok][fine]")]
    public void TemplatesThatLookInsideTheContentAreSearchedTurnByTurnOrInOrder(string jinja, string text)
    {
        // The template reads the content (endswith), so the marker rendering differs: the first template renders turn by
        // turn (each prefix of the conversation a prefix of the text), the second does not (the count comes first).
        var template = Template(jinja);
        var messages = new List<IDictionary<string, object?>> { Message("user", "Who?"), Message("assistant", "assistant?"), Message("user", "ok"), Message("assistant", "fine") };
        var example = ChatMasking.Render(template, messages, ["assistant"], "turn").Tokenize(SftTokenizer.Byte().Tokenizer);
        Assert.Equal(Encoding.UTF8.GetBytes(text).Select(b => (int)b), example.InputIds);
        Assert.Equal(ExpectedLabels(text, ("assistant?", 0), ("fine", 0)), example.Labels);
    }

    [Fact]
    public void Qwen3sTemplateTrainsTheAnswersAndTheirImEnd()
    {
        // Qwen3's real template (from the Jinja fixtures, rendered there by the reference engine) with its EOS <|im_end|>:
        // it reads the content (reasoning split) and puts an empty think block before the answer after the last query.
        string qwen3 = File.ReadLines(TestPaths.Fixture(Path.Combine("sft", "jinja-cases.jsonl")))
            .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("template").GetString()!)
            .First(t => t.Contains("reasoning_content", StringComparison.Ordinal));
        var template = new ChatTemplate("jinja", "Qwen3", JinjaTemplate.Parse(qwen3), null, "<|im_end|>");
        var messages = new List<IDictionary<string, object?>>
        {
            Message("system", "Be brief."), Message("user", "Hi there"), Message("assistant", "Hello! How can I help?"), Message("user", "What's 1+1?"), Message("assistant", "2"),
        };
        var example = ChatMasking.Render(template, messages, ["assistant"], "turn").Tokenize(SftTokenizer.Byte().Tokenizer);
        string text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
            + "<|im_start|>user\nWhat's 1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n2<|im_end|>\n";
        Assert.Equal(Encoding.UTF8.GetBytes(text).Select(b => (int)b), example.InputIds);
        Assert.Equal(ExpectedLabels(text, ("Hello! How can I help?<|im_end|>", 0), ("2<|im_end|>", 0)), example.Labels);
    }

    [Fact]
    public void Qwen3sReasoningIsKeptInTheLastAnswerAndRefusedWhereTheTemplateDropsIt()
    {
        string qwen3 = File.ReadLines(TestPaths.Fixture(Path.Combine("sft", "jinja-cases.jsonl")))
            .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("template").GetString()!)
            .First(t => t.Contains("reasoning_content", StringComparison.Ordinal));
        var template = new ChatTemplate("jinja", "Qwen3", JinjaTemplate.Parse(qwen3), null, "<|im_end|>");
        const string Thought = "<think>\nEasy.\n</think>\n\n2";
        // After the last user turn the template writes the reasoning back verbatim: the whole answer trains.
        var last = new List<IDictionary<string, object?>> { Message("user", "1+1?"), Message("assistant", Thought) };
        var example = ChatMasking.Render(template, last, ["assistant"], "turn").Tokenize(SftTokenizer.Byte().Tokenizer);
        string text = "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n" + Thought + "<|im_end|>\n";
        Assert.Equal(ExpectedLabels(text, (Thought + "<|im_end|>", 0)), example.Labels);
        // Before a later user turn it drops the reasoning: the content is not in the text, so the loss cannot be placed.
        var earlier = new List<IDictionary<string, object?>> { Message("user", "1+1?"), Message("assistant", Thought), Message("user", "2+2?"), Message("assistant", "4") };
        var e = Assert.Throws<DeepSeekSharpException>(() => ChatMasking.Render(template, earlier, ["assistant"], "turn"));
        Assert.StartsWith("message 2 (assistant): chat_template 'jinja' does not write its content verbatim", e.Message);
    }

    [Fact]
    public void ATemplateThatRewritesTheContentCannotPlaceTheLoss()
    {
        var template = Template("{% for m in messages %}{{ m.role }}: {{ m.content|upper }}\n{% endfor %}");
        var messages = new List<IDictionary<string, object?>> { Message("user", "hi"), Message("assistant", "hello") };
        var e = Assert.Throws<DeepSeekSharpException>(() => ChatMasking.Render(template, messages, ["assistant"], "turn"));
        Assert.Equal("message 2 (assistant): chat_template 'jinja' does not write its content verbatim, so its loss cannot be placed", e.Message);
    }

    [Fact]
    public void TrainedRangesSnapToTheTokensThatHoldThem()
    {
        // With BPE a range edge can fall inside a token: the token holding a range's first character trains, the one
        // holding the character after its end does not. "ab" is one token of this vocabulary.
        var tokenizer = HfTokenizer.Load(TestPaths.Fixture(Path.Combine("tokenizer", "trained-800.json")));
        string text = "the cat sat";
        int[] ids = tokenizer.Encode(text);
        var whole = new LabelledText(text, [(0, text.Length)]).Tokenize(tokenizer);
        Assert.Equal(ids, whole.Labels);
        var none = new LabelledText(text, []).Tokenize(tokenizer);
        Assert.All(none.Labels, l => Assert.Equal(TokenizedExample.IgnoreIndex, l));
        // A range covering one whole pre-tokenizer piece (" sat") trains exactly that piece's tokens.
        int[] head = tokenizer.Encode("the cat"), tail = tokenizer.Encode(" sat");
        Assert.Equal([.. head, .. tail], ids);
        var last = new LabelledText(text, [(7, text.Length)]).Tokenize(tokenizer);
        Assert.Equal([.. head.Select(_ => -100), .. tail], last.Labels);
    }

    [Fact]
    public void DatasetKeysSurviveTheRunConfigFile()
    {
        string dir = TestPaths.TempDir();
        string yaml = Path.Combine(dir, "c.yaml");
        File.WriteAllText(yaml, """
            chat_template: deepseek_v3
            train_on_inputs: true
            excess_length_strategy: truncate
            datasets:
              - path: chats.jsonl
                type: chat_template
                field_messages: conversations
                message_property_mappings: {role: from, content: value}
                roles_to_train: [assistant, tool]
                train_on_eos: all
                roles: {user: [human], assistant: [gpt]}
              - path: t.jsonl
                type: completion
                field: body
            """);
        var cfg = TrainConfig.Load(yaml, []);
        string json = cfg.ToJson();
        string again = Path.Combine(dir, TrainConfig.RunFileName);
        File.WriteAllText(again, json);
        var reloaded = TrainConfig.Load(again, []);
        Assert.Equal(json, reloaded.ToJson());
        var d = reloaded.Datasets[0];
        Assert.Equal("conversations", d.FieldMessages);
        Assert.Equal("from", d.MessagePropertyMappings!["role"]);
        Assert.Equal(["assistant", "tool"], d.RolesToTrain!);
        Assert.Equal("all", d.TrainOnEos);
        Assert.Equal(["gpt"], d.Roles!["assistant"]);
        Assert.Equal("body", reloaded.Datasets[1].Field);
        Assert.True(reloaded.TrainOnInputs);
        Assert.Equal("truncate", reloaded.ExcessLengthStrategy);
        Assert.Equal("deepseek_v3", reloaded.ChatTemplate);
        Assert.Null(reloaded.ChatTemplateJinja);
    }
}
