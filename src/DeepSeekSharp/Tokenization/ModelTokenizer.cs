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

    /// <summary>
    /// The tokenizer_config.json to store beside <paramref name="tokenizerFile"/> in a model folder: the one next to
    /// it if there is one, else the special tokens of <paramref name="tokenizer"/> with no BOS/EOS added to prompts
    /// (training packs documents with EOS between them and no BOS, so that is what the model has seen).
    /// </summary>
    public static string ConfigJsonFor(string tokenizerFile, HfTokenizer tokenizer)
    {
        string beside = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerFile))!, "tokenizer_config.json");
        if (File.Exists(beside)) return File.ReadAllText(beside);
        var config = new System.Text.Json.Nodes.JsonObject { ["add_bos_token"] = false, ["add_eos_token"] = false };
        if (tokenizer.BosId is int bos) config["bos_token"] = tokenizer.IdToToken(bos);
        if (tokenizer.EosId is int eos) config["eos_token"] = tokenizer.IdToToken(eos);
        config["clean_up_tokenization_spaces"] = false;
        config["tokenizer_class"] = "PreTrainedTokenizerFast";
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
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
