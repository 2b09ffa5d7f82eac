using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.HfCheckpoint;

/// <summary>
/// The weights of a Hugging Face model folder: <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (shard names must be plain file names inside the folder), or else every
/// <c>*.safetensors</c> in it. DeepSeek FP8 weights (F8_E4M3 with <c>&lt;name&gt;_scale_inv</c> per 128×128 block)
/// are dequantised on read: w[i, j] = q[i, j] · scale_inv[i / 128, j / 128].
/// Everything that ties the files together is checked once, on open: the index names, for every tensor, the shard
/// that holds it and leaves none out; every FP8 weight is 2-D with a scale of its block grid's shape.
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
            var (files, index, weightMap) = Layout(dir);
            foreach (var file in files) reader.Add(file);
            if (weightMap is not null) reader.CheckIndex(index!, weightMap);
            reader.CheckFp8Scales();
        }
        catch
        {
            reader.Dispose();
            throw;
        }
        return reader;
    }

    /// <summary>The weight files, and with an index its path and weight_map (tensor name → shard file name).</summary>
    private static (List<string> Files, string? Index, Dictionary<string, string>? WeightMap) Layout(string dir)
    {
        string single = Path.Combine(dir, "model.safetensors");
        string index = Path.Combine(dir, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(InputFile.ReadAllText(index, "index"), new JsonDocumentOptions { MaxDepth = 8 }); }
            catch (JsonException e) { throw new DeepSeekSharpException($"{index}: invalid JSON ({e.Message.Split('\n')[0]})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                    throw new DeepSeekSharpException($"{index}: no weight_map object");
                var shards = new SortedSet<string>(StringComparer.Ordinal);
                var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var e in map.EnumerateObject())
                {
                    string? shard = e.Value.ValueKind == JsonValueKind.String ? e.Value.GetString() : null;
                    if (string.IsNullOrEmpty(shard) || shard.Contains('/') || shard.Contains('\\') || shard == ".." || shard == "." || shard.Contains('\0') || Path.IsPathRooted(shard))
                        throw new DeepSeekSharpException($"{index}: shard name '{shard}' for '{e.Name}' is not a plain file name inside the folder");
                    shards.Add(shard);
                    weightMap[e.Name] = shard;
                }
                var files = new List<string>();
                foreach (var s in shards)
                {
                    string path = Path.Combine(dir, s);
                    if (!File.Exists(path)) throw new DeepSeekSharpException($"{index}: shard '{s}' is missing");
                    files.Add(path);
                }
                return (files, index, weightMap);
            }
        }
        if (File.Exists(single)) return ([single], null, null);
        var all = System.IO.Directory.EnumerateFiles(dir, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (all.Count == 0) throw new DeepSeekSharpException($"{dir}: no safetensors weights");
        return (all, null, null);
    }

    /// <summary>The index must say where every tensor is: each entry names the shard holding it, and no tensor of the
    /// shards is left out (a loader following the index would miss it, or read another shard's copy).</summary>
    private void CheckIndex(string index, Dictionary<string, string> weightMap)
    {
        foreach (var (name, shard) in weightMap)
        {
            if (!_owner.TryGetValue(name, out var file))
                throw new DeepSeekSharpException($"{index}: '{name}' is mapped to {shard}, which does not hold it");
            string actual = Path.GetFileName(file.FilePath);
            if (actual != shard) throw new DeepSeekSharpException($"{index}: '{name}' is mapped to {shard}, but it is in {actual}");
        }
        foreach (var (name, file) in _owner)
            if (!weightMap.ContainsKey(name))
                throw new DeepSeekSharpException($"{index}: '{name}' (in {Path.GetFileName(file.FilePath)}) is missing from the weight_map");
    }

    /// <summary>Every FP8 tensor is a 2-D weight with <c>&lt;name&gt;_scale_inv</c> of shape [⌈rows/block⌉, ⌈cols/block⌉]:
    /// without its scale its codes would be read as weights, with a wrong one dequantised against the wrong blocks.</summary>
    private void CheckFp8Scales()
    {
        foreach (var (name, file) in _owner)
        {
            var entry = file.Get(name);
            if (entry.DType is not (DType.F8E4M3 or DType.F8E5M2)) continue;
            if (entry.Shape.Length != 2) throw new DeepSeekSharpException($"{file.FilePath}: FP8 weight '{name}' has shape {ShapeUtil.Format(entry.Shape)}; it must be 2-D");
            if (!_owner.TryGetValue(name + "_scale_inv", out var scaleFile))
                throw new DeepSeekSharpException($"{file.FilePath}: FP8 weight '{name}' has no '{name}_scale_inv'");
            var scale = scaleFile.Get(name + "_scale_inv");
            int br = (entry.Shape[0] + _block.Rows - 1) / _block.Rows, bc = (entry.Shape[1] + _block.Cols - 1) / _block.Cols;
            if (scale.Shape.Length != 2 || scale.Shape[0] != br || scale.Shape[1] != bc)
                throw new DeepSeekSharpException($"{scaleFile.FilePath}: '{name}_scale_inv' has shape {ShapeUtil.Format(scale.Shape)}, expected [{br}, {bc}] for {ShapeUtil.Format(entry.Shape)} in {_block.Rows}x{_block.Cols} blocks");
            if (scale.DType is not (DType.F32 or DType.BF16 or DType.F16))
                throw new DeepSeekSharpException($"{scaleFile.FilePath}: '{name}_scale_inv' is {scale.DType}, not a floating-point scale");
        }
    }

    /// <summary>The block size scales are checked against (rows, columns).</summary>
    public (int Rows, int Cols) BlockSize => _block;

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

    /// <summary>Whether <paramref name="name"/> is an E4M3 block-quantised weight (its scale was checked on open).</summary>
    public bool IsFp8Block(string name) => GetEntry(name).DType == DType.F8E4M3;

    /// <summary>
    /// Whether <paramref name="name"/> is E4M3 in 128×128 blocks, row-major [out, in]: the layout the kernels read, so its
    /// codes can stay in the file's mapping (<see cref="MapRawBytes"/>) instead of being copied.
    /// </summary>
    public bool IsMappableFp8Block(string name) => IsFp8Block(name) && _block == (128, 128);

    /// <summary>The stored bytes of a tensor (e.g. FP8 codes), copied.</summary>
    public byte[] ReadRawBytes(string name) => _owner.TryGetValue(name, out var f) ? f.GetBytes(f.Get(name)).ToArray()
        : throw new DeepSeekSharpException($"{Directory}: no tensor named '{name}'");

    /// <summary>The stored bytes of a tensor, mapped from its file rather than copied (see <see cref="SafeTensorsReader.MapBytes"/>).</summary>
    public ReadOnlyMemory<byte> MapRawBytes(string name) => _owner.TryGetValue(name, out var f) ? f.MapBytes(f.Get(name))
        : throw new DeepSeekSharpException($"{Directory}: no tensor named '{name}'");

    /// <summary>Reads any floating-point tensor as fp32; FP8 weights with scales are block-dequantised.</summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var entry = GetEntry(name);
        var file = _owner[name];
        file.ReadAsFloat32(name, destination);
        if (entry.DType is not (DType.F8E4M3 or DType.F8E5M2)) return;
        // Open checked that the weight is 2-D and its scale has this block grid's shape.
        int rows = entry.Shape[0], cols = entry.Shape[1];
        int br = (rows + _block.Rows - 1) / _block.Rows, bc = (cols + _block.Cols - 1) / _block.Cols;
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
