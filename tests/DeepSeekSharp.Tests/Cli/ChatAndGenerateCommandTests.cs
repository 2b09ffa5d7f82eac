using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Tests.Cli;

/// <summary><c>dss chat</c> over a long conversation and <c>dss generate</c>'s streamed text with stop strings.</summary>
public class ChatAndGenerateCommandTests
{
    /// <summary>A random tiny model with the byte tokenizer (chat prompts need its BOS/EOS ids) and a short context.</summary>
    private static string TinyChatModel(string dir, int context)
    {
        var model = TinyModels.ByteVocabulary(context, 2);
        string modelDir = Path.Combine(dir, "model");
        ModelCheckpoint.Save(model, modelDir);
        ByteTokenizer.SaveAsHfJson(Path.Combine(modelDir, "tokenizer.json"));
        return modelDir;
    }

    [Fact]
    public void ChatDropsTheOldestTurnsInsteadOfFailingOnceTheHistoryOutgrowsTheContext()
    {
        string dir = TestPaths.TempDir();
        try
        {
            // One token per byte: a turn is 12 + 11..13 + 17 tokens before its reply ("<｜User｜>" alone is 12 bytes),
            // so the context of 96 holds the system prompt and one turn with its reply but never two: every turn
            // after the first must drop the one before it. The last message (52 bytes) leaves room for a 4-token
            // reply only, even alone: the reply is shortened.
            string model = TinyChatModel(dir, context: 96);
            var r = DssProcess.RunWithInput("hello there\nhow are you\nwhat now then\nbye for now\n" + new string('x', 52) + "\n",
                "chat", "--model", model, "--system", "Be brief.", "--max-new-tokens", "8", "--temperature", "0");
            Assert.True(r.ExitCode == 0, r.Stderr);
            var notes = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.DoesNotContain(notes, l => l.StartsWith("error:", StringComparison.Ordinal));
            Assert.Equal(4, notes.Length);
            Assert.All(notes, l => Assert.Equal("note: dropped the oldest turn to fit the model's context of 96 tokens", l));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void DroppingTurnsKeepsTheSystemPromptAndTheNewMessage()
    {
        var history = new List<ChatMessage>
        {
            new(ChatRole.System, "sys"),
            new(ChatRole.User, "u1"), new(ChatRole.Assistant, "a1"),
            new(ChatRole.User, "u2"), new(ChatRole.Assistant, "a2a"), new(ChatRole.Assistant, "a2b"),
            new(ChatRole.User, "u3"),
        };
        Assert.Equal(0, ChatHistory.DropOldestTurns(history, 1, h => true));
        Assert.Equal(7, history.Count);
        Assert.Equal(2, ChatHistory.DropOldestTurns(history, 1, h => h.Count <= 3));
        Assert.Equal(["sys", "u3"], history.Select(m => m.Text));
        // Nothing left to drop: the history stays as it is and the caller decides.
        Assert.Equal(0, ChatHistory.DropOldestTurns(history, 1, h => false));
        Assert.Equal(["sys", "u3"], history.Select(m => m.Text));
    }

    [Fact]
    public void GenerateStreamsNothingOfAStopString()
    {
        string dir = TestPaths.TempDir();
        try
        {
            string model = Path.Combine(dir, "model");
            Directory.CreateDirectory(model);
            foreach (var f in Directory.GetFiles(TestPaths.Fixture("v3-tiny"))) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
            ByteTokenizer.SaveAsHfJson(Path.Combine(model, "tokenizer.json"));
            var r = DssProcess.Run("generate", "--model", model, "--tokens", "72,101,108,108,111", "--max-new-tokens", "30", "--json");
            Assert.True(r.ExitCode == 0, r.Stderr);
            string text = JsonDocument.Parse(r.Stdout).RootElement.GetProperty("text").GetString()!;
            // v3-tiny has 128 ids: every token is one ASCII character.
            int at = Enumerable.Range(1, text.Length - 2).First(k => text.IndexOf(text.Substring(k, 2), StringComparison.Ordinal) == k);
            string stop = text.Substring(at, 2);
            r = DssProcess.Run("generate", "--model", model, "--tokens", "72,101,108,108,111", "--max-new-tokens", "30", "--stop", stop);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal(text[..at] + Environment.NewLine, r.Stdout);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
