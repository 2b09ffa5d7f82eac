using System.Text.Json;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Cli;

/// <summary><c>dss generate</c>'s streamed text with stop strings.</summary>
public class ChatAndGenerateCommandTests
{
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
