using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.HfCheckpoint;

/// <summary>
/// The weights of a Hugging Face model folder: <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (shard names must be plain file names inside the folder), or else every
/// <c>*.safetensors</c> in it. DeepSeek FP8 weights (F8_E4M3 with <c>&lt;name&gt;_scale_inv</c> per 128×128 block)
/// are dequantised on read: w[i, j] = q[i, j] · scale_inv[i / 128, j / 128].
/// </summary>
public sealed class HfCheckpointReader : IDisposable
{
    private readonly List<SafeTensorsReader> _files = [];
    private readonly Dictionary<string, SafeTensorsReader> _owner = new(StringComparer.Ordinal);
    private readonly (int Rows, int Cols) _block;

    private HfCheckpointReader(string dir, (int, int) block)
    {
        Directory = dir;
        _block = block;
    }

    public string Directory { get; }

    public static HfCheckpointReader Open(string dir, (int Rows, int Cols) blockSize)
    {
        if (!System.IO.Directory.Exists(dir)) throw new DeepSeekSharpException($"{dir}: model folder not found");
        var reader = new HfCheckpointReader(dir, blockSize);
        try
        {
            foreach (var file in ShardFiles(dir)) reader.Add(file);
        }
        catch
        {
            reader.Dispose();
            throw;
        }
        return reader;
    }

    private static IEnumerable<string> ShardFiles(string dir)
    {
        string single = Path.Combine(dir, "model.safetensors");
        string index = Path.Combine(dir, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(File.ReadAllText(index), new JsonDocumentOptions { MaxDepth = 8 }); }
            catch (JsonException e) { throw new DeepSeekSharpException($"{index}: invalid JSON ({e.Message.Split('\n')[0]})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                    throw new DeepSeekSharpException($"{index}: no weight_map object");
                var shards = new SortedSet<string>(StringComparer.Ordinal);
                foreach (var e in map.EnumerateObject())
                {
                    string? shard = e.Value.ValueKind == JsonValueKind.String ? e.Value.GetString() : null;
                    if (string.IsNullOrEmpty(shard) || shard.Contains('/') || shard.Contains('\\') || shard == ".." || shard == "." || shard.Contains('\0') || Path.IsPathRooted(shard))
                        throw new DeepSeekSharpException($"{index}: shard name '{shard}' for '{e.Name}' is not a plain file name inside the folder");
                    shards.Add(shard);
                }
                foreach (var s in shards)
                {
                    string path = Path.Combine(dir, s);
                    if (!File.Exists(path)) throw new DeepSeekSharpException($"{index}: shard '{s}' is missing");
                    yield return path;
                }
            }
            yield break;
        }
        if (File.Exists(single))
        {
            yield return single;
            yield break;
        }
        var all = System.IO.Directory.EnumerateFiles(dir, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (all.Count == 0) throw new DeepSeekSharpException($"{dir}: no safetensors weights");
        foreach (var f in all) yield return f;
    }

    private void Add(string file)
    {
        var st = SafeTensorsReader.Open(file);
        _files.Add(st);
        foreach (var e in st.Tensors)
            if (!_owner.TryAdd(e.Name, st))
                throw new DeepSeekSharpException($"{Directory}: tensor '{e.Name}' appears in both {Path.GetFileName(_owner[e.Name].FilePath)} and {Path.GetFileName(file)}");
    }

    public IEnumerable<string> TensorNames => _owner.Keys;

    public bool Contains(string name) => _owner.ContainsKey(name);

    public TensorEntry GetEntry(string name) =>
        _owner.TryGetValue(name, out var f) ? f.Get(name) : throw new DeepSeekSharpException($"{Directory}: no tensor named '{name}'");

    public int[] GetShape(string name) => GetEntry(name).Shape;

    /// <summary>Whether <paramref name="name"/> is an FP8 block-quantised weight with a scale companion.</summary>
    public bool IsFp8Block(string name) => GetEntry(name).DType == DType.F8E4M3 && Contains(name + "_scale_inv");

    /// <summary>The stored bytes of a tensor (e.g. FP8 codes), copied.</summary>
    public byte[] ReadRawBytes(string name) => _owner.TryGetValue(name, out var f) ? f.GetBytes(f.Get(name)).ToArray()
        : throw new DeepSeekSharpException($"{Directory}: no tensor named '{name}'");

    /// <summary>Reads any floating-point tensor as fp32; FP8 weights with scales are block-dequantised.</summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var entry = GetEntry(name);
        var file = _owner[name];
        file.ReadAsFloat32(name, destination);
        if (entry.DType is not (DType.F8E4M3 or DType.F8E5M2) || !Contains(name + "_scale_inv")) return;
        if (entry.Shape.Length != 2) throw new DeepSeekSharpException($"{Directory}: FP8 weight '{name}' must be 2-D");
        int rows = entry.Shape[0], cols = entry.Shape[1];
        int br = (rows + _block.Rows - 1) / _block.Rows, bc = (cols + _block.Cols - 1) / _block.Cols;
        var scaleEntry = GetEntry(name + "_scale_inv");
        if (scaleEntry.Shape.Length != 2 || scaleEntry.Shape[0] != br || scaleEntry.Shape[1] != bc)
            throw new DeepSeekSharpException($"{Directory}: '{name}_scale_inv' has shape {ShapeUtil.Format(scaleEntry.Shape)}, expected [{br}, {bc}] for {ShapeUtil.Format(entry.Shape)} in {_block.Rows}x{_block.Cols} blocks");
        var scales = new float[br * bc];
        _owner[name + "_scale_inv"].ReadAsFloat32(name + "_scale_inv", scales);
        for (int i = 0; i < rows; i++)
        {
            var row = destination.Slice(i * cols, cols);
            int bi = i / _block.Rows;
            for (int j = 0; j < cols; j++) row[j] *= scales[bi * bc + j / _block.Cols];
        }
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
