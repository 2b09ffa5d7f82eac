using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.IO;
using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tokenization;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>One tensor of a merge written (for progress lines).</summary>
public sealed record MergeProgress(int Done, int Total, string Tensor);

/// <summary>What <see cref="LoraMerge.Merge"/> wrote and what the merge cost in accuracy.</summary>
/// <param name="MergedLinears">Linears whose weight became W + scale·B·A</param>
/// <param name="ReplacedTensors">tensors taken whole from the adapter (<c>modules_to_save</c>)</param>
/// <param name="MaxStoredError">max |stored W' − exact fp32 (W + ΔW)| over every tensor written: what BF16 rounding or
/// FP8 requantisation lost (0 for F32)</param>
/// <param name="MaxWeight">largest |W + ΔW| over the tensors written, the scale of <paramref name="MaxStoredError"/></param>
/// <param name="ProbeTokens">length of the probe sequence</param>
/// <param name="MaxLogitDifference">max |logit| difference between the base with the adapter on (unmerged, fp32) and
/// the merged folder loaded back, over the probe sequence</param>
/// <param name="MeanLogitDifference">mean |logit| difference over the same logits</param>
/// <param name="LogitScale">largest |logit| of the adapter-on model on the probe</param>
public sealed record MergeReport(string OutputDir, CheckpointDType Weights, int MergedLinears, int ReplacedTensors, double MaxStoredError, double MaxWeight,
    int ProbeTokens, double MaxLogitDifference, double MeanLogitDifference, double LogitScale);

/// <summary>
/// Merges a LoRA adapter into its base (training.md, LoRA): every adapted Linear's weight becomes
/// W' = W + scale·B·A and <c>modules_to_save</c> tensors replace the base's; an ESFT adapter's tensors (its trained
/// experts) replace the base's likewise (<see cref="AdapterFolders"/> tells the two apart). Written as a complete HF model folder
/// (config.json, safetensors, the base's tokenizer files) that appears whole or not at all (<see cref="ModelFolder"/>).
/// </summary>
public static class LoraMerge
{
    /// <summary>Tokens of the probe sequence that measures the merge (or fewer, for a shorter context).</summary>
    public const int DefaultProbeTokens = 64;

    /// <summary>
    /// Loads <paramref name="baseDir"/>, puts the PEFT adapter of <paramref name="adapterDir"/> on it, writes the merged
    /// model to <paramref name="outputDir"/> and measures the merge: what storage lost against the exact fp32 W + ΔW,
    /// and the logits of the merged folder loaded back against the adapter-on model on a fixed probe sequence.
    /// </summary>
    /// <param name="weights">storage of the merged folder; null = the base's (FP8 when its config has quantization_config)</param>
    /// <param name="overwrite">replace a model folder at <paramref name="outputDir"/> (never an input)</param>
    /// <param name="probeTokens">probe length (capped at the model's context); 0 skips the logit comparison</param>
    public static MergeReport Merge(string baseDir, string adapterDir, string outputDir, CheckpointDType? weights = null, bool overwrite = false,
        int probeTokens = DefaultProbeTokens, IProgress<MergeProgress>? progress = null)
    {
        if (probeTokens < 0) throw new DeepSeekSharpException($"--probe-tokens must be ≥ 0 (got {probeTokens})");
        AdapterFolders.Require(adapterDir);
        ModelFolder.CheckOutput(outputDir, overwrite, baseDir, adapterDir);
        // The base with its adapter lives only inside Write: it is gone before the merged model is loaded back.
        var (written, probe, adapterLogits) = Write(baseDir, adapterDir, outputDir, weights, overwrite, probeTokens, progress);
        if (probe.Length == 0) return written;
        float[] mergedLogits = Logits(ModelCheckpoint.Load(outputDir), probe);
        return written with
        {
            MaxLogitDifference = MaxDifference(mergedLogits, adapterLogits),
            MeanLogitDifference = mergedLogits.Zip(adapterLogits, (a, b) => Math.Abs((double)a - b)).Average(),
            LogitScale = Math.Abs(TensorPrimitives.MaxMagnitude(adapterLogits)),
        };
    }

    private static (MergeReport Report, int[] Probe, float[] AdapterLogits) Write(string baseDir, string adapterDir, string outputDir, CheckpointDType? weights,
        bool overwrite, int probeTokens, IProgress<MergeProgress>? progress)
    {
        var model = ModelCheckpoint.Load(baseDir);
        var config = JsonNode.Parse(InputFile.ReadAllText(ModelCheckpoint.ConfigPath(baseDir), "config file"))!.AsObject();
        var (baseWeights, highPrecision) = StoredPrecision(baseDir, model.Config);
        var target = weights ?? baseWeights;
        // An ESFT adapter adapts no Linear: it replaces whole tensors (its trained experts), as modules_to_save does.
        IReadOnlyDictionary<string, LoraLinear> adapters = new Dictionary<string, LoraLinear>();
        if (Esft.EsftAdapter.IsAdapterFolder(adapterDir)) Esft.EsftAdapter.Load(model, adapterDir);
        else adapters = LoraAdapters.Load(model, adapterDir).Adapters;
        // Load leaves the adapters and the modules_to_save (ESFT: adapter) tensors trainable: those are what the adapter changes.
        var replaced = model.NamedParameters().Where(p => p.Parameter.RequiresGrad && !IsLoraTensor(p.Name)).Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var (_, p) in model.NamedParameters()) p.RequiresGrad = false;
        int[] probe = ProbeIds(baseDir, model.Config, probeTokens);
        float[] adapterLogits = probe.Length > 0 ? Logits(model, probe) : [];

        var quantized = target == CheckpointDType.Fp8 ? Fp8Checkpoint.QuantizedWeightNames(model) : [];
        // An FP8 base's untouched weights are copied as stored: re-quantising dequantised blocks could move a scale by an ulp.
        using var baseReader = target == CheckpointDType.Fp8 && baseWeights == CheckpointDType.Fp8 ? HfCheckpointReader.Open(baseDir, ModelCheckpoint.BlockSize(model.Config)) : null;
        var entries = ModelCheckpoint.StateDict(model).Where(e => !IsLoraTensor(e.Name)).ToList();
        var floats = new List<NamedTensor>(entries.Count);
        var raws = new List<RawTensor>(entries.Count + quantized.Count);
        double maxError = 0, maxWeight = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            var (name, t) = entries[i];
            bool merged = adapters.TryGetValue(name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : "", out var lora);
            // The base model is not run again, so an unmerged tensor is written from its own storage.
            float[] exact = merged || t.Data.Length != t.Length ? t.Span.ToArray() : t.Data;
            if (merged) lora!.FoldInto(exact);
            maxWeight = Math.Max(maxWeight, exact.Length == 0 ? 0 : Math.Abs(TensorPrimitives.MaxMagnitude(exact)));
            string where = $"{outputDir}: {name}";
            switch (target)
            {
                case CheckpointDType.F32:
                    floats.Add(new NamedTensor(name, t.Shape, exact));
                    break;
                case CheckpointDType.Bf16:
                    floats.Add(new NamedTensor(name, t.Shape, exact));
                    maxError = Math.Max(maxError, Bf16Error(exact));
                    break;
                default:
                    if (!quantized.Contains(name))
                    {
                        raws.Add(Fp8Checkpoint.HighPrecisionTensor(name, t.Shape, exact, highPrecision, where));
                        if (highPrecision == DType.BF16) maxError = Math.Max(maxError, Bf16Error(exact));
                    }
                    else if (!merged && !replaced.Contains(name) && baseReader is { BlockSize: (128, 128) } && baseReader.IsFp8Block(name))
                        AddStoredFp8(raws, baseReader, name);
                    else
                    {
                        var q = Fp8Checkpoint.AddQuantized(raws, name, exact, t.Shape, where);
                        maxError = Math.Max(maxError, MaxDifference(q.Dequantize(), exact));
                    }
                    break;
            }
            progress?.Report(new MergeProgress(i + 1, entries.Count, name));
        }

        // The base's own config (keys this code does not model survive); the storage decides quantization_config.
        config.Remove("quantization_config");
        if (target == CheckpointDType.Fp8) config["quantization_config"] = Fp8Checkpoint.QuantizationConfig();
        ModelFolder.Write(outputDir, tmp =>
        {
            if (target == CheckpointDType.Fp8) Fp8Checkpoint.WriteFiles(tmp, raws, config, highPrecision);
            else HfCheckpointWriter.Save(tmp, floats, config.ToJsonString(), target == CheckpointDType.Bf16 ? DType.BF16 : DType.F32, 2L << 30);
            Fp8Checkpoint.CopyTokenizer(baseDir, tmp);
        }, overwrite, baseDir, adapterDir);
        return (new MergeReport(outputDir, target, adapters.Count, replaced.Count, maxError, maxWeight, probe.Length, 0, 0, 0), probe, adapterLogits);
    }

    private static void AddStoredFp8(List<RawTensor> raws, HfCheckpointReader reader, string name)
    {
        raws.Add(new RawTensor(name, DType.F8E4M3, reader.GetShape(name), reader.ReadRawBytes(name)));
        string scaleName = name + "_scale_inv";
        var scales = new float[reader.GetEntry(scaleName).ElementCount];
        reader.ReadFloat32(scaleName, scales);
        raws.Add(new RawTensor(scaleName, DType.F32, reader.GetShape(scaleName), MemoryMarshal.AsBytes(scales.AsSpan()).ToArray()));
    }

    /// <summary>
    /// The probe sequence: the first <paramref name="tokens"/> (at most the context) of a fixed English text through the
    /// model folder's tokenizer.json, or, without one (or with ids beyond the model's vocabulary), fixed ids
    /// (i·7919 + 13) mod vocab. Text keeps the probe in distribution: random ids route tokens to experts near ties, where
    /// rounding flips choices a real input would not meet.
    /// </summary>
    public static int[] ProbeIds(string modelDir, DeepSeekConfig c, int tokens)
    {
        int n = Math.Min(tokens, c.MaxPositionEmbeddings);
        if (n <= 0) return [];
        if (ModelTokenizer.TryLoad(modelDir) is { } tokenizer)
        {
            var text = tokenizer.Encode(ProbeText);
            if (text.Length > 0 && text.All(id => (uint)id < (uint)c.VocabSize))
                return Enumerable.Range(0, n).Select(i => text[i % text.Length]).ToArray();
        }
        return Enumerable.Range(0, n).Select(i => (int)((i * 7919L + 13) % c.VocabSize)).ToArray();
    }

    private const string ProbeText =
        "The river rose in the spring, and the farmers moved their animals to the hills before the bridge was closed. "
        + "A language model reads text one token at a time and predicts the next one; the better it predicts, the lower its loss. "
        + "Reports are full of numbers such as 12, 345 and 6789, and of questions: what is 7 times 8? It is 56. "
        + "def add(a, b):\n    return a + b\n";

    /// <summary>The storage of a model folder's weights: FP8 when its config has quantization_config, else its embedding's type; and the type of its high-precision tensors.</summary>
    public static (CheckpointDType Weights, DType HighPrecision) StoredPrecision(string dir, DeepSeekConfig c)
    {
        using var reader = HfCheckpointReader.Open(dir, ModelCheckpoint.BlockSize(c));
        // F16 widens to F32 (BF16 would round it).
        var highPrecision = reader.GetEntry("model.embed_tokens.weight").DType == DType.BF16 ? DType.BF16 : DType.F32;
        return (c.QuantizationConfig is not null ? CheckpointDType.Fp8 : highPrecision == DType.BF16 ? CheckpointDType.Bf16 : CheckpointDType.F32, highPrecision);
    }

    private static bool IsLoraTensor(string name) =>
        name.EndsWith(".lora_A.weight", StringComparison.Ordinal) || name.EndsWith(".lora_B.weight", StringComparison.Ordinal);

    private static float[] Logits(DeepSeekModel model, int[] ids)
    {
        using var _ = GradMode.NoGrad();
        using var scope = TensorScope.Begin();
        return model.Forward(ids, SequenceBatch.Training(1, ids.Length)).Logits.Span.ToArray();
    }

    private static double Bf16Error(float[] exact)
    {
        double max = 0;
        foreach (float v in exact) max = Math.Max(max, Math.Abs(NumericFormats.Bf16ToFloat(NumericFormats.FloatToBf16(v)) - v));
        return max;
    }

    private static double MaxDifference(float[] a, float[] b)
    {
        double max = 0;
        for (int i = 0; i < b.Length; i++) max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
        return max;
    }
}
