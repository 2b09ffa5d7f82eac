using DeepSeekSharp.FineTuning.Templates;

namespace DeepSeekSharp.FineTuning;

/// <summary>A chat template ready to render, with the name and origin its errors are reported under.</summary>
/// <param name="Name">the config's name for it (tokenizer_default, deepseek_v3, jinja)</param>
/// <param name="Origin">where its text came from (a tokenizer_config.json, "built in", chat_template_jinja)</param>
public sealed record ChatTemplate(string Name, string Origin, JinjaTemplate Template, string? BosToken, string? EosToken)
{
    /// <summary>The <c>chat_template</c> values understood.</summary>
    public static readonly string[] Names = ["tokenizer_default", "deepseek_v3", "jinja"];

    /// <summary>
    /// <c>tokenizer_default</c>: the tokenizer_config.json's template; <c>deepseek_v3</c>: the built-in copy of
    /// DeepSeek-V3's; <c>jinja</c>: the text of <c>chat_template_jinja</c>. A template that uses Jinja we do not render is
    /// an error naming the template and its line, before any data is read.
    /// </summary>
    public static ChatTemplate Resolve(string name, string? jinja, SftTokenizer tokenizer)
    {
        var (source, origin) = name switch
        {
            "tokenizer_default" => (tokenizer.ChatTemplate ?? throw new DeepSeekSharpException(
                $"chat_template: tokenizer_default: the tokenizer {tokenizer.Source} has no chat_template in {tokenizer.ConfigPath ?? "a tokenizer_config.json beside it"}; set chat_template: deepseek_v3 (built in) or jinja with chat_template_jinja"),
                tokenizer.ConfigPath ?? tokenizer.Source),
            "deepseek_v3" => (BuiltInChatTemplates.DeepSeekV3, "built in"),
            "jinja" => (jinja ?? throw new DeepSeekSharpException("chat_template: jinja needs the template text in chat_template_jinja"), "chat_template_jinja"),
            _ => throw new DeepSeekSharpException($"chat_template: unknown template '{name}' (known: {string.Join(", ", Names)})"),
        };
        try
        {
            return new ChatTemplate(name, origin, JinjaTemplate.Parse(source), tokenizer.BosToken, tokenizer.EosToken);
        }
        catch (JinjaException e)
        {
            throw new DeepSeekSharpException($"chat_template '{name}' ({origin}) cannot be rendered: template line {e.Line}: {e.Message}");
        }
    }

    /// <summary>The text of <paramref name="messages"/> as transformers' <c>apply_chat_template(tokenize=False)</c> makes it.</summary>
    public string Render(IReadOnlyList<object?> messages, bool addGenerationPrompt = false)
    {
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages.ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        if (BosToken is not null) variables["bos_token"] = BosToken;
        if (EosToken is not null) variables["eos_token"] = EosToken;
        try
        {
            return Template.Render(variables);
        }
        catch (JinjaException e)
        {
            throw new DeepSeekSharpException($"chat_template '{Name}' ({Origin}): template line {e.Line}: {e.Message}");
        }
    }
}
