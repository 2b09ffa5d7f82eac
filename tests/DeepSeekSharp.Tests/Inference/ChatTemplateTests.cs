using DeepSeekSharp.Inference;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>
/// <see cref="ChatTemplate"/> against DeepSeek-V3's own Jinja template: each expected prompt below was rendered by
/// jinja2 3.1.6 from the chat_template in ../shared/data/deepseek-v3-tokenizer/tokenizer_config.json (messages as
/// in the test, add_generation_prompt true), quirks included.
/// </summary>
public class ChatTemplateTests
{
    [Fact]
    public void DeveloperMessagesAreSystemPrompts()
    {
        // jinja2 input: system "Be brief.", system "Answer in English." (the developer message stands for it), user "Hi",
        // assistant "Hello!", user "Weather?"
        const string Expected = "<｜begin▁of▁sentence｜>Be brief.\n\nAnswer in English.<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜><｜User｜>Weather?<｜Assistant｜>";
        string rendered = ChatTemplate.Render(
            [("system", "Be brief."), ("developer", "Answer in English."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Weather?")],
            addGenerationPrompt: true);
        Assert.Equal(Expected, rendered);
    }

    [Fact]
    public void ToolOutputsAreRenderedAsTheTemplateDoes()
    {
        // After tool outputs the template closes them and prompts no <｜Assistant｜>: the answer follows directly.
        const string Expected = "<｜begin▁of▁sentence｜><｜User｜>Weather?<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>24C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>";
        Assert.Equal(Expected, ChatTemplate.Render([("user", "Weather?"), ("tool", "18C"), ("tool", "24C")], addGenerationPrompt: true));
    }

    [Fact]
    public void ToolCallsAndOutputsAcrossTurnsMatchTheJinjaTemplate()
    {
        var paris = new ChatTemplate.ToolCall("get_weather", "{\"city\": \"Paris\"}");
        var rome = new ChatTemplate.ToolCall("get_weather", "{\"city\": \"Rome\"}");
        var oslo = new ChatTemplate.ToolCall("get_weather", "{\"city\": \"Oslo\"}");
        ChatTemplate.Message[] firstRound =
        [
            new("user", "Weather in Paris and Rome?"),
            new("assistant", null, [paris, rome]),
            new("tool", "18C"),
            new("tool", "24C"),
            new("assistant", "Paris 18C, Rome 24C."),
        ];
        const string FirstRound = "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris and Rome?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Rome\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>24C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>Paris 18C, Rome 24C.<｜end▁of▁sentence｜>";
        Assert.Equal(FirstRound + "<｜User｜>Thanks<｜Assistant｜>", ChatTemplate.Render([.. firstRound, new("user", "Thanks")], addGenerationPrompt: true));
        // A second round: the template's flags are per conversation, so this call neither reopens the calls
        // block nor the outputs block.
        const string SecondRound = "<｜User｜>And Oslo?\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Oslo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>\n<｜tool▁output▁begin｜>5C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>";
        Assert.Equal(FirstRound + SecondRound,
            ChatTemplate.Render([.. firstRound, new("user", "And Oslo?"), new("assistant", null, [oslo]), new("tool", "5C")], addGenerationPrompt: true));
    }

    [Fact]
    public void UnknownRolesAndMissingContentAreUserErrors()
    {
        Assert.Throws<DeepSeekSharpException>(() => ChatTemplate.Render([("function", "x")], addGenerationPrompt: true));
        Assert.Throws<DeepSeekSharpException>(() => ChatTemplate.Render([new ChatTemplate.Message("user", null)], addGenerationPrompt: true));
    }
}
