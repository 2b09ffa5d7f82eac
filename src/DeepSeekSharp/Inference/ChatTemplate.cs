using System.Text;

namespace DeepSeekSharp.Inference;

/// <summary>
/// DeepSeek-V3's chat format (the Jinja template in its tokenizer_config.json): BOS, the system prompts joined by
/// blank lines, then <c>&lt;｜User｜&gt;u</c> and <c>&lt;｜Assistant｜&gt;a&lt;｜end▁of▁sentence｜&gt;</c> turns, tool calls
/// and tool outputs in their special tokens, and a final <c>&lt;｜Assistant｜&gt;</c> to prompt a reply (none after
/// tool outputs: the template closes them and the assistant's answer follows directly). A <c>developer</c>
/// message (OpenAI's newer name for a system message) is a system prompt.
/// </summary>
public static class ChatTemplate
{
    public const string Bos = "<｜begin▁of▁sentence｜>";
    public const string Eos = "<｜end▁of▁sentence｜>";
    public const string User = "<｜User｜>";
    public const string Assistant = "<｜Assistant｜>";
    public const string ToolCallsBegin = "<｜tool▁calls▁begin｜>";
    public const string ToolCallsEnd = "<｜tool▁calls▁end｜>";
    public const string ToolCallBegin = "<｜tool▁call▁begin｜>";
    public const string ToolCallEnd = "<｜tool▁call▁end｜>";
    public const string ToolSep = "<｜tool▁sep｜>";
    public const string ToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
    public const string ToolOutputsEnd = "<｜tool▁outputs▁end｜>";
    public const string ToolOutputBegin = "<｜tool▁output▁begin｜>";
    public const string ToolOutputEnd = "<｜tool▁output▁end｜>";

    /// <summary>A message as the template reads it.</summary>
    /// <param name="Role">system, developer, user, assistant or tool</param>
    /// <param name="Content">the text; null only for an assistant turn that calls tools</param>
    /// <param name="ToolCalls">an assistant turn's tool calls (rendered only when <paramref name="Content"/> is null, as the template does)</param>
    public sealed record Message(string Role, string? Content, IReadOnlyList<ToolCall>? ToolCalls = null);

    /// <param name="Name">the function's name</param>
    /// <param name="Arguments">the arguments as JSON text</param>
    /// <param name="Type">the tool type ("function")</param>
    public sealed record ToolCall(string Name, string Arguments, string Type = "function");

    public static string Render(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt) =>
        Render(messages.Select(m => new Message(m.Role, m.Content)), addGenerationPrompt);

    public static string Render(IEnumerable<Message> messages, bool addGenerationPrompt)
    {
        var list = messages.Select(m => m.Role == "developer" ? m with { Role = "system" } : m).ToList();
        foreach (var m in list)
        {
            if (m.Role is not ("system" or "user" or "assistant" or "tool"))
                throw new DeepSeekSharpException($"unknown chat role '{m.Role}' (system, developer, user, assistant or tool)");
            if (m.Content is null && !(m.Role == "assistant" && m.ToolCalls is { Count: > 0 }))
                throw new DeepSeekSharpException($"a {m.Role} message has no content");
        }
        var sb = new StringBuilder(Bos);
        sb.Append(string.Join("\n\n", list.Where(m => m.Role == "system").Select(m => m.Content)));
        // The template's three flags, kept as it keeps them (for the whole conversation, not per turn), so the
        // prompts are the ones the model was trained on: only the first tool call opens <｜tool▁calls▁begin｜> and
        // only later ones close the run; only the first tool output opens <｜tool▁outputs▁begin｜>.
        bool toolCallSeen = false, inToolOutputs = false, firstToolOutput = true;
        foreach (var m in list)
        {
            switch (m.Role)
            {
                case "user":
                    inToolOutputs = false;
                    sb.Append(User).Append(m.Content);
                    break;
                case "assistant" when m.Content is null:
                    inToolOutputs = false;
                    foreach (var call in m.ToolCalls!)
                    {
                        if (!toolCallSeen) sb.Append(Assistant).Append(ToolCallsBegin);
                        else sb.Append('\n');
                        sb.Append(ToolCallBegin).Append(call.Type).Append(ToolSep).Append(call.Name)
                          .Append("\n```json\n").Append(call.Arguments).Append("\n```").Append(ToolCallEnd);
                        if (toolCallSeen) sb.Append(ToolCallsEnd).Append(Eos);
                        toolCallSeen = true;
                    }
                    break;
                case "assistant":
                    sb.Append(inToolOutputs ? ToolOutputsEnd : Assistant).Append(m.Content).Append(Eos);
                    inToolOutputs = false;
                    break;
                case "tool":
                    inToolOutputs = true;
                    sb.Append(firstToolOutput ? ToolOutputsBegin : "\n").Append(ToolOutputBegin).Append(m.Content).Append(ToolOutputEnd);
                    firstToolOutput = false;
                    break;
            }
        }
        if (inToolOutputs) sb.Append(ToolOutputsEnd);
        else if (addGenerationPrompt) sb.Append(Assistant);
        return sb.ToString();
    }
}
