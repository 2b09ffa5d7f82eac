using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Fp8;

/// <summary>
/// DeepSeek-V3 FP8 checkpoints (formats.md): every Linear weight of attention and of the MLPs/experts is stored
/// as F8_E4M3 codes with <c>&lt;name&gt;_scale_inv</c> (F32, one per 128×128 block, s = amax/448, s = 1 for an all-zero
/// block; partial edge blocks use the elements they have); embeddings, the head, norms, the MoE gate, the routing
/// bias and the MTP <c>eh_proj</c> stay in high precision. The config gains <c>quantization_config</c>.
/// </summary>
public static class Fp8Checkpoint
{
    /// <summary>
    /// The Linears DeepSeek-V3's FP8 recipe covers — those owned by MLA blocks and by MLPs (dense, routed and shared
    /// experts, the MTP block's too) — with their module paths. Checkpoint quantisation, FP8 training and FP8
    /// inference weights all use this one selection.
    /// </summary>
    public static IEnumerable<(string Path, Linear Linear)> Fp8Linears(DeepSeekModel model)
    {
        foreach (var (path, module) in model.NamedModules())
            if (module is Mla or Mlp)
                foreach (var (child, sub) in module.Children)
                    if (sub is Linear linear) yield return ($"{path}.{child}", linear);
    }

    /// <summary>HF weight names of <see cref="Fp8Linears"/>.</summary>
    public static HashSet<string> QuantizedWeightNames(DeepSeekModel model) =>
        Fp8Linears(model).Select(l => l.Path + ".weight").ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// Writes the FP8 checkpoint of <paramref name="sourceDir"/> as a new model folder (<see cref="ModelFolder.Write"/>:
    /// never over the source, an existing model folder only with <paramref name="overwrite"/>).
    /// </summary>
    public static void Quantize(string sourceDir, string outputDir, DType highPrecision = DType.F32, bool overwrite = false)
    {
        string configPath = Path.Combine(sourceDir, "config.json");
        var config = JsonNode.Parse(IO.InputFile.ReadAllText(configPath, "config file"))!.AsObject();
        if (config["quantization_config"] is not null)
            throw new DeepSeekSharpException($"{sourceDir}: the checkpoint is already quantised (config.json has quantization_config); dequantize it first");
        var model = ModelCheckpoint.Load(sourceDir);
        var quantized = QuantizedWeightNames(model);
        var tensors = new List<RawTensor>();
        foreach (var (name, t) in ModelCheckpoint.StateDict(model))
        {
            if (quantized.Contains(name)) AddQuantized(tensors, name, t.Span, t.Shape, $"{sourceDir}: {name}");
            else tensors.Add(HighPrecisionTensor(name, t.Shape, t.Span, highPrecision, $"{sourceDir}: {name}"));
        }
        config["quantization_config"] = QuantizationConfig();
        ModelFolder.Write(outputDir, tmp =>
        {
            WriteFiles(tmp, tensors, config, highPrecision);
            CopyTokenizer(sourceDir, tmp);
        }, overwrite, sourceDir);
    }

    /// <summary>The <c>quantization_config</c> of DeepSeek-V3's FP8 release (dynamic activation scales, E4M3, 128×128 weight blocks).</summary>
    public static JsonObject QuantizationConfig() => new()
    {
        ["activation_scheme"] = "dynamic", ["fmt"] = "e4m3", ["quant_method"] = "fp8", ["weight_block_size"] = new JsonArray(128, 128),
    };

    /// <summary>
    /// Quantises a weight [rows, cols] per 128×128 block and adds its E4M3 codes and <c>&lt;name&gt;_scale_inv</c> to
    /// <paramref name="tensors"/>; returns the quantised blocks (for measuring what the rounding lost).
    /// </summary>
    /// <param name="where">names the tensor in an error (NaN/Inf in the weight)</param>
    public static Fp8Tensor AddQuantized(List<RawTensor> tensors, string name, ReadOnlySpan<float> weight, int[] shape, string where)
    {
        var q = Fp8Quantizer.QuantizeBlocks(weight, shape[0], shape[1], where);
        tensors.Add(new RawTensor(name, DType.F8E4M3, shape, q.Codes));
        tensors.Add(new RawTensor(name + "_scale_inv", DType.F32, [(shape[0] + 127) / 128, q.ScaleCols], MemoryMarshal.AsBytes(q.Scales.AsSpan()).ToArray()));
        return q;
    }

    /// <summary>A tensor kept in high precision (F32 or BF16, rounded to nearest even); NaN/Inf is an error naming <paramref name="where"/>.</summary>
    public static RawTensor HighPrecisionTensor(string name, int[] shape, ReadOnlySpan<float> values, DType dtype, string where)
    {
        foreach (float v in values)
            if (!float.IsFinite(v)) throw new DeepSeekSharpException($"{where} contains NaN/Inf");
        if (dtype == DType.F32) return new RawTensor(name, DType.F32, shape, MemoryMarshal.AsBytes(values).ToArray());
        if (dtype != DType.BF16) throw new ArgumentException($"high-precision tensors are F32 or BF16, not {dtype}", nameof(dtype));
        var bits = new ushort[values.Length];
        NumericFormats.FloatToBf16(values, bits);
        return new RawTensor(name, DType.BF16, shape, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray());
    }

    /// <summary>
    /// Writes an FP8 checkpoint's files into <paramref name="dir"/>, a folder being assembled: <c>model.safetensors</c>
    /// and config.json (with <c>torch_dtype</c> naming the high-precision weights' type, as DeepSeek-V3's FP8 release does).
    /// </summary>
    public static void WriteFiles(string dir, IReadOnlyList<RawTensor> tensors, JsonObject config, DType highPrecision)
    {
        SafeTensorsWriter.WriteRaw(Path.Combine(dir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        HfCheckpointWriter.WriteConfigs(dir, config, highPrecision);
    }

    /// <summary>Writes a plain (F32 or BF16) checkpoint from an FP8 one, dropping quantization_config, as a new model folder.</summary>
    public static void Dequantize(string sourceDir, string outputDir, DType dtype, bool overwrite = false)
    {
        var model = ModelCheckpoint.Load(sourceDir);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(sourceDir, "config.json")))!.AsObject();
        config.Remove("quantization_config");
        ModelFolder.Write(outputDir, tmp =>
        {
            ModelCheckpoint.WriteFiles(model, tmp, dtype, configJson: config.ToJsonString());
            CopyTokenizer(sourceDir, tmp);
        }, overwrite, sourceDir);
    }

    /// <summary>Copies the tokenizer files and generation_config.json of a model folder into a new one.</summary>
    public static void CopyTokenizer(string from, string to)
    {
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            if (File.Exists(Path.Combine(from, f))) File.Copy(Path.Combine(from, f), Path.Combine(to, f), overwrite: true);
    }
}
