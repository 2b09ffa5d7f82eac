using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// Reads and writes a <see cref="DeepSeekModel"/> as a Hugging Face folder (formats.md): config.json plus
/// safetensors (single or sharded; F32, BF16, F16 or DeepSeek FP8 with 128×128 block scales, dequantised on load).
/// </summary>
public static class ModelCheckpoint
{
    public static string ConfigPath(string path) =>
        Directory.Exists(path) ? Path.Combine(path, "config.json") : path;

    /// <summary>Whether <paramref name="dir"/> holds any safetensors weights.</summary>
    public static bool HasWeights(string dir) =>
        Directory.Exists(dir) && (File.Exists(Path.Combine(dir, "model.safetensors.index.json")) || Directory.EnumerateFiles(dir, "*.safetensors").Any());

    /// <summary>Builds the model from <c>DIR/config.json</c> without allocating weights (shapes and names only).</summary>
    public static DeepSeekModel LoadMeta(string path) =>
        new(DeepSeekConfig.Load(ConfigPath(path)), materialize: false);

    /// <summary>Loads config and weights; every parameter and buffer must be present with the right shape.</summary>
    public static DeepSeekModel Load(string dir) => Load(dir, _ => false);

    /// <summary>Loads, leaving parameters for which <paramref name="skip"/> is true as meta tensors (callers fill them otherwise).</summary>
    public static DeepSeekModel Load(string dir, Func<string, bool> skip)
    {
        if (!Directory.Exists(dir)) throw new DeepSeekSharpException($"{dir}: model folder not found");
        var config = DeepSeekConfig.Load(Path.Combine(dir, "config.json"));
        if (!HasWeights(dir)) throw new DeepSeekSharpException($"{dir}: no *.safetensors weights (use `dss init` to create a random-init model)");
        var model = new DeepSeekModel(config, materialize: false);
        using var reader = HfCheckpointReader.Open(dir, BlockSize(config));
        // Skipped weights are filled by the caller with one-byte FP8 codes (InferenceWeights), the rest as fp32. Codes
        // the checkpoint stores as 128x128-block E4M3 are mapped from the file, not copied: file-backed pages the kernel
        // can drop under pressure, so they are not counted against the memory this process may fill.
        long valueBytes = model.NamedParameters().Sum(p => !skip(p.Name) ? p.Parameter.Length * sizeof(float)
                : reader.Contains(p.Name) && reader.IsMappableFp8Block(p.Name) ? 0 : p.Parameter.Length)
            + model.NamedBuffers().Sum(b => b.Buffer.Length * sizeof(float));
        ModelFootprint.EnsureFits(config, valueBytes, "its weights");
        foreach (var (name, p) in model.NamedParameters())
            if (!skip(name)) LoadTensor(reader, dir, name, p, required: true);
        foreach (var (name, b) in model.NamedBuffers())
            if (!LoadTensor(reader, dir, name, b, required: false)) b.Materialize();
        return model;
    }

    /// <summary>The FP8 block size of the config's quantization_config (128×128 when it names none).</summary>
    public static (int Rows, int Cols) BlockSize(DeepSeekConfig c) =>
        c.QuantizationConfig?.WeightBlockSize is [int r, int k] ? (r, k) : (128, 128);

    private static bool LoadTensor(HfCheckpointReader reader, string dir, string name, Tensor t, bool required)
    {
        if (!reader.Contains(name))
        {
            if (required) throw new DeepSeekSharpException($"{dir}: weight '{name}' is missing from the checkpoint");
            return false;
        }
        var shape = reader.GetShape(name);
        if (!shape.AsSpan().SequenceEqual(t.Shape))
            throw new DeepSeekSharpException($"{dir}: weight '{name}' has shape {ShapeUtil.Format(shape)}, the config implies {ShapeUtil.Format(t.Shape)}");
        t.Materialize();
        reader.ReadFloat32(name, t.Span);
        return true;
    }

    /// <summary>Everything a checkpoint holds: parameters, buffers, and the MTP layers' copies of the shared embedding and head.</summary>
    public static IEnumerable<(string Name, Tensor Tensor)> StateDict(DeepSeekModel model)
    {
        foreach (var (name, p) in model.NamedParameters()) yield return (name, p);
        foreach (var (name, b) in model.NamedBuffers()) yield return (name, b);
        foreach (var (name, shared) in model.MtpSharedCopies()) yield return (name, shared);
    }

    /// <summary>
    /// Writes a new model folder: config.json and the weights (F32 or BF16), sharded above <paramref name="maxShardBytes"/>,
    /// the folder as a whole atomically; an existing non-empty folder only with <paramref name="overwrite"/> (<see cref="ModelFolder"/>).
    /// </summary>
    public static void Save(DeepSeekModel model, string dir, DType dtype = DType.F32, long maxShardBytes = 2L << 30, string? configJson = null, bool overwrite = false) =>
        ModelFolder.Write(dir, tmp => WriteFiles(model, tmp, dtype, maxShardBytes, configJson), overwrite);

    /// <summary>Writes config.json and the weights into <paramref name="dir"/>, a folder being assembled (atomic per file).</summary>
    public static void WriteFiles(DeepSeekModel model, string dir, DType dtype = DType.F32, long maxShardBytes = 2L << 30, string? configJson = null)
    {
        var tensors = StateDict(model).Select(e => new NamedTensor(e.Name, e.Tensor.Shape, e.Tensor.Data.AsMemory(0, (int)e.Tensor.Length)));
        HfCheckpointWriter.Save(dir, tensors.ToList(), configJson ?? model.Config.ToJson(), dtype, maxShardBytes);
    }
}
