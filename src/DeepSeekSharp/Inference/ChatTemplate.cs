using System.Text;

namespace DeepSeekSharp.Inference;

/// <summary>
/// DeepSeek-V3's chat format (the Jinja template in its tokenizer_config.json, for plain text messages):
/// BOS, the system prompts joined by blank lines, then <c>&lt;｜User｜&gt;u</c> and
/// <c>&lt;｜Assistant｜&gt;a&lt;｜end▁of▁sentence｜&gt;</c> turns, and a final <c>&lt;｜Assistant｜&gt;</c> to prompt a reply.
/// </summary>
public static class ChatTemplate
{
    public const string Bos = "<｜begin▁of▁sentence｜>";
    public const string Eos = "<｜end▁of▁sentence｜>";
    public const string User = "<｜User｜>";
    public const string Assistant = "<｜Assistant｜>";

    public static string Render(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt)
    {
        var list = messages.ToList();
        var sb = new StringBuilder(Bos);
        sb.Append(string.Join("\n\n", list.Where(m => m.Role == "system").Select(m => m.Content)));
        foreach (var (role, content) in list)
        {
            switch (role)
            {
                case "system": break;
                case "user": sb.Append(User).Append(content); break;
                case "assistant": sb.Append(Assistant).Append(content).Append(Eos); break;
                default: throw new DeepSeekSharpException($"unknown chat role '{role}' (system, user or assistant)");
            }
        }
        if (addGenerationPrompt) sb.Append(Assistant);
        return sb.ToString();
    }
}
