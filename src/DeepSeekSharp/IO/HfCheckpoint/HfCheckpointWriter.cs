using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.HfCheckpoint;

/// <summary>
/// Saves tensors as a Hugging Face folder: config.json plus <c>model.safetensors</c>, or shards
/// <c>model-0000i-of-0000N.safetensors</c> with <c>model.safetensors.index.json</c> when larger than
/// <c>maxShardBytes</c>. Every file is written atomically. config.json's <c>torch_dtype</c> says what the weights
/// were written as, and <c>generation_config.json</c> carries the config's BOS/EOS ids (as HF folders do).
/// </summary>
public static class HfCheckpointWriter
{
    public static void Save(string dir, IReadOnlyList<NamedTensor> tensors, string configJson, DType dtype, long maxShardBytes)
    {
        Directory.CreateDirectory(dir);
        int size = NumericFormats.SizeOf(dtype);
        var shards = new List<List<NamedTensor>> { new() };
        long current = 0, total = 0;
        foreach (var t in tensors)
        {
            long bytes = t.Data.Length * (long)size;
            if (current > 0 && current + bytes > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(t);
            current += bytes;
            total += bytes;
        }
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        if (shards.Count == 1)
        {
            SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), shards[0], dtype, meta);
            string staleIndex = Path.Combine(dir, "model.safetensors.index.json");
            if (File.Exists(staleIndex)) File.Delete(staleIndex);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string name = string.Create(CultureInfo.InvariantCulture, $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors");
                SafeTensorsWriter.Write(Path.Combine(dir, name), shards[i], dtype, meta);
                foreach (var t in shards[i]) weightMap[t.Name] = name;
            }
            AtomicFile.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
                JsonSerializer.Serialize(new { metadata = new { total_size = total }, weight_map = weightMap }, new JsonSerializerOptions { WriteIndented = true }));
        }
        WriteConfigs(dir, JsonNode.Parse(configJson)!.AsObject(), dtype);
    }

    /// <summary>Writes config.json with <c>torch_dtype</c> set to <paramref name="dtype"/>, and generation_config.json.</summary>
    public static void WriteConfigs(string dir, JsonObject config, DType dtype)
    {
        config["torch_dtype"] = TorchDtype(dtype);
        var indented = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(indented));
        var generation = new JsonObject { ["_from_model_config"] = true };
        foreach (var key in new[] { "bos_token_id", "eos_token_id" })
            if (config[key] is JsonNode id) generation[key] = id.DeepClone();
        AtomicFile.WriteAllText(Path.Combine(dir, "generation_config.json"), generation.ToJsonString(indented));
    }

    /// <summary>PyTorch's name of a weight type, as HF configs spell it.</summary>
    public static string TorchDtype(DType dtype) => dtype switch
    {
        DType.BF16 => "bfloat16",
        DType.F16 => "float16",
        DType.F32 => "float32",
        _ => throw new ArgumentException($"no torch_dtype for {dtype}", nameof(dtype)),
    };
}
