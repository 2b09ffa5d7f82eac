using System.Text;
using DeepSeekSharp.Data;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Data;

/// <summary>
/// Dataset and JSONL input is read strictly: an unpaired surrogate escape or bytes that are not UTF-8 are one line
/// naming the file and the line, for tokenize and train alike (they used to crash, or to be replaced by U+FFFD).
/// </summary>
[Collection(nameof(InProcessDss))]
public sealed class Utf8InputTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); } // the test-end hook may have removed it

    private string Write(string name, params byte[][] lines)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, lines.SelectMany(l => l.Append((byte)'\n')).ToArray());
        return path;
    }

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    private string TrainOn(string dataset, string type)
    {
        string yaml = Path.Combine(_dir, "train.yaml");
        File.WriteAllText(yaml, $"model_preset: tiny-v3\ntokenizer: byte\ndatasets:\n  - path: {dataset}\n    type: {type}\nmax_steps: 1\noutput_dir: {Path.Combine(_dir, "run")}\n");
        return yaml;
    }

    [Fact]
    public void UnpairedSurrogateEscapeIsOneLineNamingFileAndLine()
    {
        string jsonl = Write("lone.jsonl", Utf8("""{"text": "fine"}"""), Utf8("""{"text": "a\ud800b"}"""));
        InProcessDss.AssertOneLineError(InProcessDss.Run("tokenize", "--tokenizer", TestPaths.Fixture(Path.Combine("tokenizer", "trained-800.json")), "--jsonl", jsonl),
            jsonl + ":2", "unpaired surrogate");
        InProcessDss.AssertOneLineError(InProcessDss.Run("train", "--config", TrainOn(jsonl, "jsonl")), jsonl + ":2", "unpaired surrogate", maxAllocatedMb: 1024);
        string chat = Write("chat.jsonl", Utf8("""{"messages": [{"role": "user", "content": "\udc00"}, {"role": "assistant", "content": "x"}]}"""));
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => DocumentReader.Read(chat).ToList());
        Assert.StartsWith(chat + ":1:", e.Message);
    }

    [Fact]
    public void InvalidUtf8IsOneLineNamingFileAndLine()
    {
        string jsonl = Write("bytes.jsonl", Utf8("""{"text": "one"}"""), Utf8("""{"text": "two"}"""), [.. Utf8("""{"text": "thr"""), 0xFF, .. Utf8("""e"}""")]);
        InProcessDss.AssertOneLineError(InProcessDss.Run("tokenize", "--tokenizer", TestPaths.Fixture(Path.Combine("tokenizer", "trained-800.json")), "--jsonl", jsonl),
            jsonl + ":3", "invalid UTF-8");
        InProcessDss.AssertOneLineError(InProcessDss.Run("train", "--config", TrainOn(jsonl, "jsonl")), jsonl + ":3", "invalid UTF-8", maxAllocatedMb: 1024);
        // Plain text datasets too: a truncated two-byte sequence on line 2.
        string text = Write("text.txt", Utf8("first line"), [.. Utf8("second "), 0xC3, 0x28]);
        InProcessDss.AssertOneLineError(InProcessDss.Run("train", "--config", TrainOn(text, "text")), text + ":2", "invalid UTF-8", maxAllocatedMb: 1024);
    }

    [Fact]
    public void ValidInputWithBomAndCrlfStillReads()
    {
        string jsonl = Write("ok.jsonl", [0xEF, 0xBB, 0xBF, .. Utf8("{\"text\": \"naïve 😀\"}\r")], Utf8("  "), Utf8("{\"text\": \"\\ud83d\\ude00 pair\"}"));
        Assert.Equal(["naïve 😀", "😀 pair"], DocumentReader.Read(jsonl, "jsonl").Select(d => d.Text));
    }
}
