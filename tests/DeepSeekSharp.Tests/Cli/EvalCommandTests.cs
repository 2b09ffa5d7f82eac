using System.Text;
using System.Text.Json;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tests.Evaluation;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Cli;

/// <summary><c>dss eval</c> through its real entry point: both metrics' JSON, and bad input as one line.</summary>
[Collection(nameof(InProcessDss))]
public sealed class EvalCommandTests
{
    private readonly string _dir = TestPaths.TempDir();

    private string Model(bool withTokenizer = true)
    {
        string dir = Path.Combine(_dir, withTokenizer ? "model" : "bare-model");
        if (Directory.Exists(dir)) return dir;
        ModelCheckpoint.Save(Gsm8kEvaluatorTests.TinyModel(), dir);
        if (withTokenizer) ByteTokenizer.SaveAsHfJson(Path.Combine(dir, "tokenizer.json"));
        return dir;
    }

    private string Write(string name, params string[] lines)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    private string Gsm8kFile() => Write("gsm8k.jsonl", Gsm8kEvaluatorTests.Problems.Select(p => JsonSerializer.Serialize(new { question = p.Question, answer = p.Answer })).ToArray());

    [Fact]
    public void Gsm8kJsonHasTheAccuracyAndSamples()
    {
        var r = InProcessDss.Run("eval", "--model", Model(), "--data", Gsm8kFile(), "--metric", "gsm8k", "--chat-template", "deepseek_v3", "--max-new-tokens", "16", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal("gsm8k", root.GetProperty("metric").GetString());
        Assert.Equal(3, root.GetProperty("examples").GetInt32());
        Assert.InRange(root.GetProperty("accuracy").GetDouble(), 0, 1);
        var samples = root.GetProperty("samples");
        int right = samples.GetProperty("right").GetArrayLength(), wrong = samples.GetProperty("wrong").GetArrayLength();
        Assert.Equal(3, right + wrong);
        Assert.Equal(root.GetProperty("correct").GetInt32(), right);
        foreach (var s in samples.GetProperty("wrong").EnumerateArray())
        {
            Assert.False(s.GetProperty("correct").GetBoolean());
            Assert.Contains(s.GetProperty("reference").GetString(), new[] { "7", "24", "1250" });
            Assert.Equal(JsonValueKind.String, s.GetProperty("generation").ValueKind);
        }
    }

    [Fact]
    public void ChatTemplateLossWithDefaultKeysTrainsAssistantTurnsAndTheirEos()
    {
        string[] replies = ["Paris is the capital.", "Ça va très bien, merci !"];
        string data = Write("chats.jsonl",
            JsonSerializer.Serialize(new { messages = new[] { new { role = "system", content = "Be brief." }, new { role = "user", content = "Capital of France?" }, new { role = "assistant", content = replies[0] } } }),
            JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = "Comment ça va ?" }, new { role = "assistant", content = replies[1] } } }));
        var r = InProcessDss.Run("eval", "--model", Model(), "--data", data, "--type", "chat_template", "--chat-template", "deepseek_v3", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        // One byte per token: an assistant turn trains its bytes and the EOS closing it; the EOS is no text.
        int bytes = replies.Sum(s => Encoding.UTF8.GetByteCount(s));
        Assert.Equal(2, root.GetProperty("examples").GetInt32());
        Assert.Equal(bytes + replies.Length, root.GetProperty("trained_tokens").GetInt64());
        Assert.Equal(bytes, root.GetProperty("target_bytes").GetInt64());
        double loss = root.GetProperty("loss").GetDouble();
        Assert.InRange(loss, 0.1, 20);
        Assert.Equal(root.GetProperty("total_nats").GetDouble() / Math.Log(2) / bytes, root.GetProperty("bits_per_byte").GetDouble(), 1e-3);
    }

    [Fact]
    public void AMissingModelFolderIsOneLine()
    {
        string missing = Path.Combine(_dir, "no-such-model");
        InProcessDss.AssertOneLineError(InProcessDss.Run("eval", "--model", missing, "--data", Gsm8kFile(), "--metric", "gsm8k"), missing, "model folder not found");
    }

    [Fact]
    public void AModelWithoutATokenizerIsOneLineUnlessOneIsGiven()
    {
        string bare = Model(withTokenizer: false);
        string data = Gsm8kFile();
        InProcessDss.AssertOneLineError(InProcessDss.Run("eval", "--model", bare, "--data", data, "--type", "gsm8k"), bare, "no tokenizer.json; give --tokenizer");
        string tokenizer = Path.Combine(_dir, "byte-tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokenizer);
        var r = InProcessDss.Run("eval", "--model", bare, "--data", data, "--type", "gsm8k", "--tokenizer", tokenizer, "--chat-template", "deepseek_v3", "--limit", "2", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.Equal(2, doc.RootElement.GetProperty("examples").GetInt32());
    }

    [Theory]
    [InlineData("loss")]
    [InlineData("gsm8k")]
    public void AnEmptyDatasetIsOneLine(string metric)
    {
        string empty = Write("empty.jsonl");
        InProcessDss.AssertOneLineError(InProcessDss.Run("eval", "--model", Model(), "--data", empty, "--type", "gsm8k", "--metric", metric, "--chat-template", "deepseek_v3"),
            empty, "the dataset has no examples");
    }

    [Fact]
    public void ATokenizerWithoutAChatTemplateNeedsOneNamed()
    {
        string model = Model();
        InProcessDss.AssertOneLineError(InProcessDss.Run("eval", "--model", model, "--data", Gsm8kFile(), "--metric", "gsm8k"),
            Path.Combine(model, "tokenizer.json"), "has no chat_template; give --chat-template deepseek_v3");
    }
}
