using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Data;

/// <summary>
/// Streams documents from the dataset formats of formats.md: plain text files and folders of them, JSON lines
/// with <c>text</c>, GSM8K (<c>question</c>/<c>answer</c>), Alpaca (<c>instruction</c>/<c>input</c>/<c>output</c>) and chat
/// (<c>messages: [{role, content}]</c>, rendered in DeepSeek-V3's chat format). Files are read line by line, so
/// their size is not bounded by memory, and strictly (<see cref="Utf8Text"/>): invalid UTF-8 or an unpaired surrogate
/// is an error naming the file and line.
/// </summary>
public static class DocumentReader
{
    public static readonly string[] Formats = ["text", "jsonl", "gsm8k", "alpaca", "chat"];

    private const string Eos = Inference.ChatTemplate.Eos;

    /// <summary>Guesses the format: folders and non-.jsonl files are text; JSON lines by their first object's keys.</summary>
    public static string DetectFormat(string path)
    {
        if (Directory.Exists(path) || !path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)) return "text";
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: dataset file not found");
        return Utf8Text.JsonLines(path, (root, line) =>
            root.TryGetProperty("messages", out _) ? "chat"
            : root.TryGetProperty("question", out _) && root.TryGetProperty("answer", out _) ? "gsm8k"
            : root.TryGetProperty("instruction", out _) ? "alpaca"
            : "jsonl").FirstOrDefault() ?? "jsonl";
    }

    public static IEnumerable<Document> Read(string path, string? format = null)
    {
        format ??= DetectFormat(path);
        if (format == "text") return ReadText(path);
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: dataset file not found");
        return format switch
        {
            "jsonl" => ReadJsonLines(path, (root, line) => new Document("", RequireString(root, "text", path, line))),
            "gsm8k" => ReadJsonLines(path, (root, line) => new Document(
                $"Question: {RequireString(root, "question", path, line)}\nAnswer: ", RequireString(root, "answer", path, line))),
            "alpaca" => ReadJsonLines(path, (root, line) => Alpaca(root, path, line)),
            "chat" => ReadJsonLines(path, (root, line) => Chat(root, path, line)),
            _ => throw new DeepSeekSharpException($"{path}: unknown dataset format '{format}' (expected {string.Join(", ", Formats)})"),
        };
    }

    private static IEnumerable<Document> ReadText(string path)
    {
        if (File.Exists(path))
        {
            yield return new Document("", Utf8Text.ReadAll(path));
            yield break;
        }
        if (!Directory.Exists(path)) throw new DeepSeekSharpException($"{path}: dataset file or folder not found");
        foreach (var file in TextFiles(path).Order(StringComparer.Ordinal))
            yield return new Document("", Utf8Text.ReadAll(file));
    }

    /// <summary>The files a dataset path is read from: the file itself, or a text folder's files in reading order.</summary>
    public static IEnumerable<string> SourceFiles(string path) =>
        File.Exists(path) ? [path]
        : Directory.Exists(path) ? TextFiles(path).Order(StringComparer.Ordinal)
        : throw new DeepSeekSharpException($"{path}: dataset file or folder not found");

    /// <summary>.txt and .md files under a folder, skipping hidden folders and build/dependency output.</summary>
    private static IEnumerable<string> TextFiles(string root)
    {
        foreach (var file in Directory.EnumerateFiles(root))
            if (file.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || file.EndsWith(".md", StringComparison.OrdinalIgnoreCase))
                yield return file;
        foreach (var dir in Directory.EnumerateDirectories(root))
        {
            string name = Path.GetFileName(dir);
            if (name.StartsWith('.') || name is "bin" or "obj" or "node_modules" or "runs" or "TestResults") continue;
            foreach (var f in TextFiles(dir)) yield return f;
        }
    }

    private static IEnumerable<Document> ReadJsonLines(string path, Func<JsonElement, int, Document> convert) => Utf8Text.JsonLines(path, convert);

    private static string RequireString(JsonElement root, string key, string path, int line) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? Utf8Text.GetString(v, path, line, key)
            : throw new DeepSeekSharpException($"{path}:{line}: missing string field '{key}'");

    private static Document Alpaca(JsonElement root, string path, int line)
    {
        string instruction = RequireString(root, "instruction", path, line);
        string input = root.TryGetProperty("input", out var i) && i.ValueKind == JsonValueKind.String ? Utf8Text.GetString(i, path, line, "input") : "";
        string prompt = input.Length > 0 ? $"{instruction}\n\n{input}" : instruction;
        return new Document(Inference.ChatTemplate.Render([("user", prompt)], addGenerationPrompt: true), RequireString(root, "output", path, line) + Eos);
    }

    /// <summary>
    /// DeepSeek-V3 chat format: BOS, system prompts joined by blank lines, then User/Assistant turns; the loss trains
    /// on the LAST assistant turn (earlier turns are context).
    /// </summary>
    private static Document Chat(JsonElement root, string path, int line)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
            throw new DeepSeekSharpException($"{path}:{line}: missing array field 'messages'");
        var system = new List<string>();
        var turns = new List<(string Role, string Content)>();
        foreach (var m in messages.EnumerateArray())
        {
            string role = RequireString(m, "role", path, line), content = RequireString(m, "content", path, line);
            if (role == "system") system.Add(content);
            else if (role is "user" or "assistant") turns.Add((role, content));
            else throw new DeepSeekSharpException($"{path}:{line}: unknown role '{role}'");
        }
        int last = turns.FindLastIndex(t => t.Role == "assistant");
        if (last < 0) throw new DeepSeekSharpException($"{path}:{line}: no assistant message to train on");
        var context = system.Select(c => ("system", c)).Concat(turns.Take(last));
        return new Document(Inference.ChatTemplate.Render(context, addGenerationPrompt: true), turns[last].Content + Eos);
    }
}
