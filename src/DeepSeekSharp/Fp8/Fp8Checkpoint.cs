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
            if (quantized.Contains(name))
            {
                var q = Fp8Quantizer.QuantizeBlocks(t.Span, t.Shape[0], t.Shape[1], $"{sourceDir}: {name}");
                tensors.Add(new RawTensor(name, DType.F8E4M3, t.Shape, q.Codes));
                tensors.Add(new RawTensor(name + "_scale_inv", DType.F32, [(t.Shape[0] + 127) / 128, (t.Shape[1] + 127) / 128], MemoryMarshal.AsBytes(q.Scales.AsSpan()).ToArray()));
            }
            else
            {
                foreach (float v in t.Span)
                    if (!float.IsFinite(v)) throw new DeepSeekSharpException($"{sourceDir}: {name} contains NaN/Inf");
                tensors.Add(highPrecision == DType.BF16 ? ToBf16(name, t) : new RawTensor(name, DType.F32, t.Shape, MemoryMarshal.AsBytes(t.Span).ToArray()));
            }
        }
        config["quantization_config"] = new JsonObject
        {
            ["activation_scheme"] = "dynamic", ["fmt"] = "e4m3", ["quant_method"] = "fp8", ["weight_block_size"] = new JsonArray(128, 128),
        };
        ModelFolder.Write(outputDir, tmp =>
        {
            SafeTensorsWriter.WriteRaw(Path.Combine(tmp, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            // torch_dtype names the unquantised weights' type, as in DeepSeek-V3's own FP8 release.
            HfCheckpointWriter.WriteConfigs(tmp, config, highPrecision);
            CopyTokenizer(sourceDir, tmp);
        }, overwrite, sourceDir);
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

    private static RawTensor ToBf16(string name, Tensor t)
    {
        var bits = new ushort[t.Length];
        var s = t.Span;
        for (int i = 0; i < bits.Length; i++) bits[i] = NumericFormats.FloatToBf16(s[i]);
        return new RawTensor(name, DType.BF16, t.Shape, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray());
    }

    private static void CopyTokenizer(string from, string to)
    {
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            if (File.Exists(Path.Combine(from, f))) File.Copy(Path.Combine(from, f), Path.Combine(to, f), overwrite: true);
    }
}
