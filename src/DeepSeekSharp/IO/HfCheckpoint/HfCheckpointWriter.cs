using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.HfCheckpoint;

/// <summary>
/// Saves tensors as a Hugging Face folder: config.json plus <c>model.safetensors</c>, or shards
/// <c>model-0000i-of-0000N.safetensors</c> with <c>model.safetensors.index.json</c> when larger than
/// <c>maxShardBytes</c>. Every file is written atomically.
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
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), configJson);
    }
}
