namespace DeepSeekSharp.FineTuning;

/// <summary>
/// Renders a conversation with a chat template and finds which characters carry loss: the content of each message
/// whose role is in <c>roles_to_train</c>, plus EOS tokens as <c>train_on_eos</c> says (Axolotl's semantics:
/// <c>turn</c> = the EOS closing each trained turn, <c>all</c> = every EOS, <c>last</c> = the last one, <c>none</c>).
/// The template's own text (role headers such as <c>&lt;｜Assistant｜&gt;</c>, BOS, separators) never carries loss.
/// </summary>
public static class ChatMasking
{
    public static readonly string[] TrainOnEosValues = ["turn", "all", "last", "none"];

    /// <summary>
    /// Where each message's content lies in the rendering is found by rendering the conversation once more with every
    /// content replaced by a marker: when putting the contents back where the markers are gives the rendering exactly,
    /// the positions are exact. Otherwise (a template that looks inside the content) the contents are searched for:
    /// within each message's turn when every rendering of the first i messages starts with that of the first i − 1
    /// (true of DeepSeek's and most templates), else in order through the whole text. A trained message whose content
    /// the template does not write out verbatim is an error (the loss could not be placed).
    /// </summary>
    /// <param name="messages">dicts with <c>role</c> and <c>content</c> (null only for tool calls) and any other keys</param>
    public static LabelledText Render(ChatTemplate template, IReadOnlyList<IDictionary<string, object?>> messages, IReadOnlyCollection<string> rolesToTrain, string trainOnEos)
    {
        var all = messages.Cast<object?>().ToList();
        string full = template.Render(all);
        var located = ByMarkers(template, messages, full);
        // The turn-by-turn renderings cost one rendering per message: made only when the markers were not enough.
        int[]? ends = located is null || messages.Any(m => m["content"] is null) ? TurnEnds(template, all, full) : null;
        located ??= BySearch(messages, full, ends);
        for (int i = 0; i < messages.Count; i++)
            if (messages[i]["content"] is null && ends is not null) located[i] = (ends[i], ends[i + 1], true); // a tool-calling turn: all its text is output

        var trained = new List<(int, int)>();
        string? eos = template.EosToken;
        for (int i = 0; i < messages.Count; i++)
        {
            string role = messages[i]["role"] as string ?? "";
            if (!rolesToTrain.Contains(role)) continue;
            if (!located[i].Found)
                throw new DeepSeekSharpException($"message {i + 1} ({role}): chat_template '{template.Name}' does not write its content verbatim, so its loss cannot be placed");
            trained.Add((located[i].Start, located[i].End));
            if (trainOnEos != "turn" || eos is null) continue;
            int limit = ends is not null ? ends[i + 1] : i + 1 < messages.Count && located[i + 1].Found ? located[i + 1].Start : full.Length;
            int q = full.IndexOf(eos, located[i].End, StringComparison.Ordinal);
            if (q >= 0 && q + eos.Length <= limit) trained.Add((q, q + eos.Length));
        }
        if (eos is not null && trainOnEos is "all" or "last")
        {
            var positions = new List<int>();
            for (int q = full.IndexOf(eos, StringComparison.Ordinal); q >= 0; q = full.IndexOf(eos, q + eos.Length, StringComparison.Ordinal)) positions.Add(q);
            foreach (int q in trainOnEos == "all" ? positions : positions.TakeLast(1)) trained.Add((q, q + eos.Length));
        }
        trained.Sort();
        return new LabelledText(full, trained);
    }

    private const char MarkerOpen = '\uE000', MarkerClose = '\uE001';

    /// <summary>Exact content positions from a rendering with markers in place of the contents, or null when that
    /// rendering with the contents put back differs from <paramref name="full"/>.</summary>
    private static (int Start, int End, bool Found)[]? ByMarkers(ChatTemplate template, IReadOnlyList<IDictionary<string, object?>> messages, string full)
    {
        if (full.Contains(MarkerOpen) || full.Contains(MarkerClose)) return null;
        var marked = new List<object?>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            var copy = new OrderedDictionary<string, object?>(messages[i], StringComparer.Ordinal);
            if (copy["content"] is string) copy["content"] = $"{MarkerOpen}{i}{MarkerClose}";
            marked.Add(copy);
        }
        string rendered;
        try { rendered = template.Render(marked); }
        catch (DeepSeekSharpException) { return null; }
        var located = new (int Start, int End, bool Found)[messages.Count];
        var text = new System.Text.StringBuilder(full.Length);
        int pos = 0;
        for (int open = rendered.IndexOf(MarkerOpen); open >= 0; open = rendered.IndexOf(MarkerOpen, pos))
        {
            int close = rendered.IndexOf(MarkerClose, open);
            if (close < 0 || !int.TryParse(rendered.AsSpan(open + 1, close - open - 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i)
                || i >= messages.Count || located[i].Found) return null;
            text.Append(rendered, pos, open - pos);
            string content = (string)messages[i]["content"]!;
            located[i] = (text.Length, text.Length + content.Length, true);
            text.Append(content);
            pos = close + 1;
        }
        text.Append(rendered, pos, rendered.Length - pos);
        return text.ToString() == full ? located : null;
    }

    private static (int Start, int End, bool Found)[] BySearch(IReadOnlyList<IDictionary<string, object?>> messages, string full, int[]? ends)
    {
        var located = new (int Start, int End, bool Found)[messages.Count];
        int cursor = 0;
        for (int i = 0; i < messages.Count; i++)
        {
            int windowStart = ends is null ? cursor : ends[i], windowEnd = ends is null ? full.Length : ends[i + 1];
            if (messages[i]["content"] is not string content)
            {
                located[i] = (windowStart, windowStart, false);
                continue;
            }
            int at = Find(full, content, windowStart, windowEnd, fromEnd: ends is not null);
            string found = content;
            if (at < 0 && content.Trim() is var trimmed && trimmed.Length != content.Length)
                (at, found) = (Find(full, trimmed, windowStart, windowEnd, fromEnd: ends is not null), trimmed);
            located[i] = at < 0 ? (windowStart, windowStart, false) : (at, at + found.Length, true);
            if (ends is null && at >= 0) cursor = at + found.Length;
        }
        return located;
    }

    private static int Find(string text, string part, int start, int end, bool fromEnd)
    {
        if (part.Length == 0 || end - start < part.Length) return -1;
        return fromEnd ? text.LastIndexOf(part, end - 1, end - start, StringComparison.Ordinal) : text.IndexOf(part, start, StringComparison.Ordinal);
    }

    /// <summary>The rendering lengths of the first 0, 1, …, n messages when each is a prefix of the next and of the whole; else null.</summary>
    private static int[]? TurnEnds(ChatTemplate template, List<object?> messages, string full)
    {
        var ends = new int[messages.Count + 1];
        string previous = "";
        for (int i = 0; i <= messages.Count; i++)
        {
            string text;
            if (i == messages.Count) text = full;
            else
            {
                try { text = template.Render(messages.GetRange(0, i)); }
                catch (DeepSeekSharpException) { return null; } // e.g. a template that refuses a conversation without a user turn
            }
            if (!text.StartsWith(previous, StringComparison.Ordinal) || !full.StartsWith(text, StringComparison.Ordinal)) return null;
            ends[i] = text.Length;
            previous = text;
        }
        return ends;
    }
}
