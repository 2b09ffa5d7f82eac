using System.Text.Json;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Tokenization;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// Fine-tuning data with the real DeepSeek-V3 tokenizer. The chat expectations come from
/// Fixtures/sft/deepseek-v3-chats-expected.jsonl (HF's Jinja engine and the Rust tokenizers, mask read off the ids by
/// tools/chat-template-fixtures/make_fixtures.mjs); the others are built from the file's own text with the tokenizer
/// (ids of a string we write out here) and the separately tested DeepSeek-V3 renderer of Inference.ChatTemplate.
/// </summary>
public sealed class SftDataTests : IDisposable
{
    private static readonly string TokenizerDir = Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer");
    private static readonly Lazy<HfTokenizer> DeepSeek = new(() => HfTokenizer.Load(Path.Combine(TokenizerDir, "tokenizer.json")));
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); } // the test-end hook may have removed it

    internal static List<(int[] Ids, int[] Labels)> Expected()
    {
        var list = new List<(int[], int[])>();
        foreach (var line in File.ReadLines(TestPaths.Fixture(Path.Combine("sft", "deepseek-v3-chats-expected.jsonl"))).Where(l => l.Length > 0))
        {
            using var doc = JsonDocument.Parse(line);
            list.Add((doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                doc.RootElement.GetProperty("labels").EnumerateArray().Select(e => e.GetInt32()).ToArray()));
        }
        return list;
    }

    private SftData Load(string datasetYaml, params string[] overrides)
    {
        string config = Path.Combine(_dir, "sft.yaml");
        File.WriteAllText(config, $"tokenizer: {TokenizerDir}\nsequence_len: 4096\ndatasets:\n{datasetYaml}");
        var cfg = TrainConfig.Load(config, overrides);
        return SftDatasets.Load(cfg, SftTokenizer.FromConfig(cfg));
    }

    private string Write(string name, params object[] records)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllLines(path, records.Select(r => JsonSerializer.Serialize(r)));
        return path;
    }

    [Theory]
    [InlineData("tokenizer_default")]
    [InlineData("deepseek_v3")]
    public void ChatsMatchTheReferenceIdsAndOnlyAssistantTurnsAndTheirEosTrain(string template)
    {
        var data = Load($"  - path: {TestPaths.Fixture(Path.Combine("sft", "chats-messages.jsonl"))}\n    type: chat_template\n", $"chat_template={template}");
        var expected = Expected();
        Assert.Equal(expected.Count, data.Examples.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Ids, data.Examples[i].Example.InputIds);
            Assert.Equal(expected[i].Labels, data.Examples[i].Example.Labels);
        }
    }

    [Fact]
    public void ShareGptConversationsLoadThroughTheMappings()
    {
        var data = Load($"""
              - path: {TestPaths.Fixture(Path.Combine("sft", "chats-sharegpt.jsonl"))}
                type: chat_template
                field_messages: conversations
                message_property_mappings:
                  role: from
                  content: value

            """);
        var expected = Expected();
        Assert.Equal(expected.Select(e => e.Ids), data.Examples.Select(e => e.Example.InputIds));
        Assert.Equal(expected.Select(e => e.Labels), data.Examples.Select(e => e.Example.Labels));
    }

    [Fact]
    public void TrainOnEosAndRolesToTrainChangeOnlyWhatTheySay()
    {
        string file = TestPaths.Fixture(Path.Combine("sft", "chats-messages.jsonl"));
        var expected = Expected();
        int eos = DeepSeek.Value.EosId!.Value;

        var none = Load($"  - path: {file}\n    type: chat_template\n    train_on_eos: none\n");
        for (int i = 0; i < expected.Count; i++)
        {
            var want = expected[i].Labels.Select(l => l == eos ? TokenizedExample.IgnoreIndex : l).ToArray();
            Assert.Equal(want, none.Examples[i].Example.Labels);
        }

        var last = Load($"  - path: {file}\n    type: chat_template\n    train_on_eos: last\n");
        for (int i = 0; i < expected.Count; i++)
        {
            int lastEos = Array.LastIndexOf(expected[i].Ids, eos);
            var want = expected[i].Labels.Select((l, k) => l == eos && k != lastEos ? TokenizedExample.IgnoreIndex : l).ToArray();
            Assert.Equal(want, last.Examples[i].Example.Labels);
        }

        // Training user turns too: user content tokens train, their role markers and BOS do not.
        var both = Load($"  - path: {file}\n    type: chat_template\n    roles_to_train: [user, assistant]\n");
        int user = DeepSeek.Value.TokenToId("<｜User｜>")!.Value, assistant = DeepSeek.Value.TokenToId("<｜Assistant｜>")!.Value;
        for (int i = 0; i < expected.Count; i++)
        {
            var ids = expected[i].Ids;
            var labels = both.Examples[i].Example.Labels;
            bool inUser = false;
            for (int k = 0; k < ids.Length; k++)
            {
                if (ids[k] == user) { inUser = true; Assert.Equal(TokenizedExample.IgnoreIndex, labels[k]); continue; }
                if (ids[k] == assistant) inUser = false;
                int want = inUser ? ids[k] : expected[i].Labels[k];
                Assert.Equal(want, labels[k]);
            }
        }

        var all = Load($"  - path: {file}\n    type: chat_template\n", "train_on_inputs=true");
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i].Ids, all.Examples[i].Example.Labels);
    }

    [Fact]
    public void Gsm8kIsAUserQuestionAndATrainedAnswer()
    {
        string file = Path.Combine(TestPaths.Shared, "data", "gsm8k", "test.jsonl");
        string firstLines = Path.Combine(_dir, "gsm8k.jsonl");
        File.WriteAllLines(firstLines, File.ReadLines(file).Take(20));
        var data = Load($"  - path: {firstLines}\n    type: gsm8k\n");
        Assert.Equal(20, data.Examples.Count);
        int k = 0;
        foreach (var line in File.ReadLines(firstLines))
        {
            using var doc = JsonDocument.Parse(line);
            string question = doc.RootElement.GetProperty("question").GetString()!, answer = doc.RootElement.GetProperty("answer").GetString()!;
            string prompt = DeepSeekSharp.Inference.ChatTemplate.Render([("user", question)], addGenerationPrompt: true);
            int[] promptIds = DeepSeek.Value.Encode(prompt), answerIds = DeepSeek.Value.Encode(answer);
            int eos = DeepSeek.Value.EosId!.Value;
            var ex = data.Examples[k++].Example;
            Assert.Equal([.. promptIds, .. answerIds, eos], ex.InputIds);
            Assert.Equal([.. promptIds.Select(_ => TokenizedExample.IgnoreIndex), .. answerIds, eos], ex.Labels);
        }
    }

    [Fact]
    public void AlpacaTrainsTheOutputAndEosAfterTheAlpacaPrompt()
    {
        string file = Write("alpaca.jsonl",
            new { instruction = "Add the numbers.", input = "2 and 3", output = "5" },
            new { instruction = "Say hi.", input = "", output = "Hi!" });
        var data = Load($"  - path: {file}\n    type: alpaca\n");
        string withInput = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n";
        string noInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n";
        int bos = DeepSeek.Value.BosId!.Value, eos = DeepSeek.Value.EosId!.Value;
        foreach (var (ex, prompt, output) in new[] { (data.Examples[0].Example, withInput, "5"), (data.Examples[1].Example, noInput, "Hi!") })
        {
            // add_bos_token is true in DeepSeek-V3's tokenizer_config.json.
            Assert.Equal([bos, .. DeepSeek.Value.Encode(prompt + output), eos], ex.InputIds);
            Assert.Equal(output, DeepSeek.Value.Decode(ex.Labels.Where(l => l >= 0 && l != eos).ToArray()));
            Assert.Equal(eos, ex.Labels[^1]);
            Assert.Equal(TokenizedExample.IgnoreIndex, ex.Labels[0]);
        }
    }

    [Fact]
    public void CompletionTrainsEverythingAndInputOutputTrainsLabelledSegments()
    {
        string completion = Write("completion.jsonl", new { text = "Once upon a time." }, new { body = "no text" });
        var missing = Assert.Throws<DeepSeekSharpException>(() => Load($"  - path: {completion}\n    type: completion\n"));
        Assert.Equal($"{completion}:2: missing string field 'text'", missing.Message);
        string renamed = Write("renamed.jsonl", new { body = "Once upon a time." });
        var r = Load($"  - path: {renamed}\n    type: completion\n    field: body\n").Examples;
        int bos = DeepSeek.Value.BosId!.Value, eos = DeepSeek.Value.EosId!.Value;
        int[] want = [bos, .. DeepSeek.Value.Encode("Once upon a time."), eos];
        Assert.Equal(want, r[0].Example.InputIds);
        Assert.Equal(want.Skip(1), r[0].Example.Labels.Skip(1));
        Assert.Equal(TokenizedExample.IgnoreIndex, r[0].Example.Labels[0]);

        string segments = Write("segments.jsonl", new
        {
            segments = new object[]
            {
                new { label = false, text = "<｜begin▁of▁sentence｜>Question: 2+2?\n" },
                new { label = true, text = "Answer: 4<｜end▁of▁sentence｜>" },
                new { label = false, text = "\n" },
            },
        });
        var s = Load($"  - path: {segments}\n    type: input_output\n").Examples[0].Example;
        int[] a = DeepSeek.Value.Encode("<｜begin▁of▁sentence｜>Question: 2+2?\n"), b = DeepSeek.Value.Encode("Answer: 4<｜end▁of▁sentence｜>"), n = DeepSeek.Value.Encode("\n");
        Assert.Equal([.. a, .. b, .. n], s.InputIds);
        Assert.Equal([.. a.Select(_ => -100), .. b, .. n.Select(_ => -100)], s.Labels);
    }

    [Fact]
    public void ExcessLengthIsDroppedTruncatedOrAnError()
    {
        string file = TestPaths.Fixture(Path.Combine("sft", "chats-messages.jsonl"));
        var expected = Expected();
        int limit = 60;
        int longer = expected.Count(e => e.Ids.Length > limit);
        Assert.InRange(longer, 1, expected.Count - 1); // the fixture has chats on both sides of the limit

        var dropped = Load($"  - path: {file}\n    type: chat_template\n", $"sequence_len={limit}");
        Assert.Equal(expected.Where(e => e.Ids.Length <= limit).Select(e => e.Ids), dropped.Examples.Select(e => e.Example.InputIds));
        Assert.Equal(longer, dropped.Datasets[0].DroppedTooLong);

        var truncated = Load($"  - path: {file}\n    type: chat_template\n", $"sequence_len={limit}", "excess_length_strategy=truncate");
        var kept = expected.Where(e => e.Labels.Take(limit).Any(l => l >= 0)).ToList();
        Assert.Equal(kept.Select(e => e.Ids.Take(limit).ToArray()), truncated.Examples.Select(e => e.Example.InputIds));
        Assert.Equal(kept.Select(e => e.Labels.Take(limit).ToArray()), truncated.Examples.Select(e => e.Example.Labels));
        Assert.Equal(kept.Count(e => e.Ids.Length > limit), truncated.Datasets[0].Truncated);

        var e = Assert.Throws<DeepSeekSharpException>(() => Load($"  - path: {file}\n    type: chat_template\n", $"sequence_len={limit}", "excess_length_strategy=raise"));
        int firstLong = expected.FindIndex(x => x.Ids.Length > limit) + 1;
        Assert.StartsWith($"{file}:{firstLong}: example of {expected[firstLong - 1].Ids.Length} tokens is longer than sequence_len {limit}", e.Message);
    }

    [Fact]
    public void ByteTokenizerReadsTheTemplatesBosAndEosAsItsSpecialIds()
    {
        string file = Write("chat.jsonl", new { messages = new[] { new { role = "user", content = "Hi" }, new { role = "assistant", content = "Yo" } } });
        string config = Path.Combine(_dir, "byte.yaml");
        File.WriteAllText(config, $"chat_template: deepseek_v3\ndatasets:\n  - path: {file}\n    type: chat_template\n");
        var cfg = TrainConfig.Load(config, []);
        var ex = SftDatasets.Load(cfg, SftTokenizer.FromConfig(cfg)).Examples[0].Example;
        byte[] Utf8(string s) => System.Text.Encoding.UTF8.GetBytes(s);
        int[] want = [ByteTokenizer.Bos, .. Utf8("<｜User｜>Hi<｜Assistant｜>").Select(b => (int)b), .. Utf8("Yo").Select(b => (int)b), ByteTokenizer.Eos];
        Assert.Equal(want, ex.InputIds);
        Assert.Equal([.. want.SkipLast(3).Select(_ => -100), 'Y', 'o', ByteTokenizer.Eos], ex.Labels);
    }
}
