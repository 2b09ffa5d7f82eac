using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Inference;

/// <summary>Keeps a growing conversation inside the model's context.</summary>
public static class ChatHistory
{
    /// <summary>
    /// Drops the oldest turns (a user message and the replies up to the next user message) after the first
    /// <paramref name="keep"/> messages (the system prompt) until <paramref name="fits"/> holds; the last message
    /// (the one being answered) is never dropped.
    /// </summary>
    /// <returns>the number of turns dropped (0 when the history already fits)</returns>
    public static int DropOldestTurns(List<ChatMessage> history, int keep, Func<IReadOnlyList<ChatMessage>, bool> fits)
    {
        int dropped = 0;
        while (!fits(history))
        {
            if (keep >= history.Count - 1) break;
            int next = history.FindIndex(keep + 1, m => m.Role == ChatRole.User);
            if (next < 0) break;
            history.RemoveRange(keep, next - keep);
            dropped++;
        }
        return dropped;
    }
}
