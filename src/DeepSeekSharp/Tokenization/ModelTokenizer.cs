using System.Text.Json;

namespace DeepSeekSharp.Tokenization;

/// <summary>The tokenizer stored in a model folder (tokenizer.json + optional tokenizer_config.json).</summary>
public static class ModelTokenizer
{
    public static HfTokenizer? TryLoad(string modelDir)
    {
        string path = Path.Combine(modelDir, "tokenizer.json");
        return File.Exists(path) ? HfTokenizer.Load(path) : null;
    }

    /// <summary>Encodes a plain-text prompt, prepending BOS when tokenizer_config.json says <c>add_bos_token</c>.</summary>
    public static int[] EncodePrompt(ITextTokenizer tokenizer, string modelDir, string text)
    {
        var ids = tokenizer.Encode(text);
        if (AddsBos(modelDir) && tokenizer.BosId is int bos && (ids.Length == 0 || ids[0] != bos)) ids = [bos, .. ids];
        return ids;
    }

    private static bool AddsBos(string modelDir)
    {
        string path = Path.Combine(modelDir, "tokenizer_config.json");
        if (!File.Exists(path)) return false;
        try
        {
            using var doc = JsonDocument.Parse(IO.InputFile.ReadAllText(path));
            return doc.RootElement.TryGetProperty("add_bos_token", out var v) && v.ValueKind == JsonValueKind.True;
        }
        catch (JsonException e) { throw new DeepSeekSharpException($"{path}: invalid JSON ({e.Message.Split('\n')[0]})"); }
    }
}
