using System.Text.Json;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// <c>dss data preview</c> through the real entry point: --json lines equal the reference fixture, the text view marks
/// exactly the trained text, and every kind of bad input is one line naming the file, exit code 1 and nothing on stdout.
/// </summary>
[Collection(nameof(InProcessDss))]
public sealed class DataPreviewTests : IDisposable
{
    private static readonly string TokenizerDir = Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer");
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); } // the test-end hook may have removed it

    private string Config(string body)
    {
        string path = Path.Combine(_dir, "sft.yaml");
        File.WriteAllText(path, body);
        return path;
    }

    private string Chat(string name, params string[] lines)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void JsonLinesAreTheReferenceIdsAndLabelsInDatasetOrder()
    {
        string config = Config($"tokenizer: {TokenizerDir}\nsequence_len: 4096\ndatasets:\n  - path: {TestPaths.Fixture(Path.Combine("sft", "chats-messages.jsonl"))}\n    type: chat_template\n");
        var r = InProcessDss.Run("data", "preview", "--config", config, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var expected = SftDataTests.Expected();
        Assert.Equal(expected.Count, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            Assert.Equal(["input_ids", "labels"], doc.RootElement.EnumerateObject().Select(p => p.Name));
            Assert.Equal(expected[i].Ids, doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()));
            Assert.Equal(expected[i].Labels, doc.RootElement.GetProperty("labels").EnumerateArray().Select(e => e.GetInt32()));
        }
        Assert.Contains($"total: {expected.Count} examples", r.Stderr);
    }

    [Fact]
    public void TextViewMarksTheTrainedTurnsAndCounts()
    {
        string file = Chat("chat.jsonl",
            """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}""",
            """{"messages": [{"role": "user", "content": "This one is far too long for the limit set below, so it is dropped."}, {"role": "assistant", "content": "Indeed."}]}""");
        string config = Config($"chat_template: deepseek_v3\nsequence_len: 100\ndatasets:\n  - path: {file}\n    type: chat_template\n");
        var r = InProcessDss.Run("data", "preview", "--config", config);
        Assert.True(r.ExitCode == 0, r.Stderr);
        // The byte tokenizer: one token per byte, BOS/EOS as single ids; the EOS of each assistant turn trains.
        Assert.Contains("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>⟦Hello!<｜end▁of▁sentence｜>⟧<｜User｜>Bye<｜Assistant｜>⟦Bye!<｜end▁of▁sentence｜>⟧\n", r.Stdout);
        int tokens = 1 + System.Text.Encoding.UTF8.GetByteCount("Be brief.<｜User｜>Hi<｜Assistant｜>Hello!<｜User｜>Bye<｜Assistant｜>Bye!") + 2;
        Assert.Contains($"({file}:1): {tokens} tokens, {"Hello!".Length + 1 + "Bye!".Length + 1} trained", r.Stdout);
        Assert.Contains("2 read, 1 kept", r.Stdout);
        Assert.Contains("dropped 1 longer than sequence_len", r.Stdout);
        Assert.Contains("total: 1 examples", r.Stdout);
    }

    public static TheoryData<string, string, string> BadChats => new()
    {
        { """{"messages": [{"content": "Hi"}, {"role": "assistant", "content": "Yo"}]}""", ":1", "message 1 has no string 'role'" },
        { """{"messages": [{"role": "user"}, {"role": "assistant", "content": "Yo"}]}""", ":1", "message 1 (user) has no string 'content'" },
        { """{"messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Yo"}]}""", ":1", "message 2 has unknown role 'wizard'" },
        { """{"conversation": []}""", ":1", "missing array field 'messages'" },
        { """{"messages": [{"role": "user", "content": 7}]}""", ":1", "has no string 'content'" },
        { "{not json", ":1", "invalid JSON" },
        { "", "", "the dataset has no examples" },
        // Only a user turn: nothing to train, so nothing is left after filtering.
        { """{"messages": [{"role": "user", "content": "Hi"}]}""", "", "no examples left after filtering (1 read: 0 longer than sequence_len 256, 1 without a trained token)" },
    };

    [Theory]
    [MemberData(nameof(BadChats))]
    public void BadChatFilesAreOneLineNamingTheFileAndNothingIsPrinted(string line, string where, string message)
    {
        string file = Chat("bad.jsonl", line);
        string config = Config($"chat_template: deepseek_v3\ndatasets:\n  - path: {file}\n    type: chat_template\n");
        foreach (var mode in new[] { "--json", "--n=1" })
        {
            var r = InProcessDss.Run("data", "preview", "--config", config, mode);
            InProcessDss.AssertOneLineError(r, file + where, message);
            Assert.Equal("", r.Stdout);
        }
        // `dss train` on the same file stops with the same line before a step, and writes no checkpoint.
        string output = Path.Combine(Path.GetDirectoryName(file)!, "train-out");
        var train = InProcessDss.Run("train", "--config", config, "--set", "model_preset=tiny-v3", "--set", $"output_dir={output}", "--set", "max_steps=2");
        InProcessDss.AssertOneLineError(train, file + where, message);
        Assert.False(Directory.Exists(output) && Directory.EnumerateDirectories(output, "checkpoint-*").Any());
    }

    [Fact]
    public void ExcessLengthUnderEachStrategy()
    {
        string file = Chat("long.jsonl",
            """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Short."}]}""",
            """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A much longer answer that does not fit."}]}""");
        string config = Config($"chat_template: deepseek_v3\nsequence_len: 60\ndatasets:\n  - path: {file}\n    type: chat_template\n");
        int longTokens = 1 + System.Text.Encoding.UTF8.GetByteCount("<｜User｜>Hi<｜Assistant｜>A much longer answer that does not fit.") + 1;

        var raise = InProcessDss.Run("data", "preview", "--config", config, "--set", "excess_length_strategy=raise", "--json");
        InProcessDss.AssertOneLineError(raise, file + ":2", $"example of {longTokens} tokens is longer than sequence_len 60");
        Assert.Equal("", raise.Stdout);

        var drop = InProcessDss.Run("data", "preview", "--config", config, "--json");
        Assert.True(drop.ExitCode == 0, drop.Stderr);
        Assert.Single(drop.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("1 dropped", drop.Stderr);

        var truncate = InProcessDss.Run("data", "preview", "--config", config, "--set", "excess_length_strategy=truncate", "--json");
        Assert.True(truncate.ExitCode == 0, truncate.Stderr);
        var lines = truncate.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        using var second = JsonDocument.Parse(lines[1]);
        Assert.Equal(60, second.RootElement.GetProperty("input_ids").GetArrayLength());
        Assert.Equal(60, second.RootElement.GetProperty("labels").GetArrayLength());

        // Every example too long: the dataset is empty after filtering.
        var empty = InProcessDss.Run("data", "preview", "--config", config, "--set", "sequence_len=10");
        InProcessDss.AssertOneLineError(empty, file, "no examples left after filtering (2 read: 2 longer than sequence_len 10");
        Assert.Equal("", empty.Stdout);

        var bad = InProcessDss.Run("data", "preview", "--config", config, "--set", "excess_length_strategy=squeeze");
        InProcessDss.AssertOneLineError(bad, "--set", "excess_length_strategy must be drop, truncate or raise");
    }

    [Fact]
    public void TemplatesAndKeysThatCannotWorkAreOneLine()
    {
        string file = Chat("ok.jsonl", """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}""");
        // The byte tokenizer has no tokenizer_config.json, so no chat template of its own.
        var noTemplate = InProcessDss.Run("data", "preview", "--config", Config($"datasets:\n  - path: {file}\n    type: chat_template\n"));
        InProcessDss.AssertOneLineError(noTemplate, "chat_template: tokenizer_default", "has no chat_template");

        var unknown = InProcessDss.Run("data", "preview", "--config", Config($"chat_template: chatml_v9\ndatasets:\n  - path: {file}\n    type: chat_template\n"));
        InProcessDss.AssertOneLineError(unknown, "chat_template: unknown template 'chatml_v9'", "deepseek_v3");

        string jinja = Config($"chat_template: jinja\nchat_template_jinja: \"{{% for m in messages %}}{{{{ m.content | wordwrap }}}}{{% endfor %}}\"\ndatasets:\n  - path: {file}\n    type: chat_template\n");
        var unsupported = InProcessDss.Run("data", "preview", "--config", jinja);
        InProcessDss.AssertOneLineError(unsupported, "chat_template 'jinja' (chat_template_jinja)", "the filter 'wordwrap' is not supported");

        string config = Config($"datasets:\n  - path: {file}\n    type: chat_template\n    field_mesages: conversations\n");
        var typo = InProcessDss.Run("data", "preview", "--config", config);
        InProcessDss.AssertOneLineError(typo, config, "unknown dataset key 'field_mesages'");

        var sourceName = InProcessDss.Run("data", "preview", "--config", Config($"chat_template: deepseek_v3\ndatasets:\n  - path: {file}\n    type: chat_template\n    roles_to_train: [gpt]\n"));
        InProcessDss.AssertOneLineError(sourceName, file, "roles_to_train names 'gpt', which is not a template role (roles: user, assistant, system, tool)");

        var noType = InProcessDss.Run("data", "preview", "--config", Config($"datasets:\n  - path: {file}\n"));
        InProcessDss.AssertOneLineError(noType, file, "give the dataset's type");
    }
}
