using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning;

/// <summary>
/// The frozen base of a fine-tuning run (LoRA, or frozen parameters) kept in memory as stored (config key
/// <c>base_model_precision</c>): BF16 bits, or E4M3 codes with 128×128 scales read straight from an FP8 checkpoint.
/// A frozen Linear then has no fp32 copy, no gradient and no optimizer state; its forward and input-gradient GEMMs
/// widen the weight inside the kernel (<see cref="Autograd.Functional.LinearCompressed"/>). Which Linears: those
/// <see cref="InferenceWeights"/> compresses (FP8: attention and MLP/expert Linears as DeepSeek's FP8 checkpoints;
/// BF16: every Linear but kv_b_proj, which absorbed-attention decoding reads as fp32). Linears the run trains are
/// widened back to fp32 after freezing is decided.
/// </summary>
public static class FrozenBaseStorage
{
    /// <summary>The storage <paramref name="precision"/> (auto, fp32, bf16, fp8) means for a base with <paramref name="config"/>.</summary>
    public static WeightStorage Resolve(string precision, DeepSeekConfig config) => precision switch
    {
        "fp32" => WeightStorage.Fp32,
        "bf16" => WeightStorage.Bf16,
        "fp8" => WeightStorage.Fp8Block,
        _ => config.QuantizationConfig is not null ? WeightStorage.Fp8Block
            : config.TorchDtype is "bfloat16" ? WeightStorage.Bf16 : WeightStorage.Fp32,
    };

    /// <summary>Loads the base at <paramref name="dir"/> with its compressible Linears in <paramref name="storage"/>
    /// (an FP8 checkpoint's codes are taken as stored, never widened in memory, and mapped from its files rather than
    /// copied; its BF16 head stays BF16).</summary>
    public static DeepSeekModel Load(string dir, WeightStorage storage) =>
        storage == WeightStorage.Fp32 ? ModelCheckpoint.Load(dir) : InferenceWeights.Load(dir, storage);

    /// <summary>
    /// Gives every Linear whose weight is to be trained (lora_modules_to_save, unfrozen_parameters) its fp32 weight
    /// back from the compressed copy. Returns the names of the widened weights.
    /// </summary>
    public static List<string> WidenTrainable(DeepSeekModel model)
    {
        var widened = new List<string>();
        foreach (var (path, module) in model.NamedModules())
        {
            var (weight, stored) = module switch
            {
                Linear l => (l.Weight, l.InferenceWeight),
                Embedding e => (e.Weight, e.InferenceWeight),
                _ => (null, null),
            };
            if (weight is null || stored is null || !weight.RequiresGrad) continue;
            Widen(weight, stored);
            if (module is Linear linear) linear.InferenceWeight = null;
            else ((Embedding)module).InferenceWeight = null;
            widened.Add(path + ".weight");
        }
        return widened;
    }

    /// <summary>Gives <paramref name="weight"/> its fp32 values back from <paramref name="stored"/>.</summary>
    public static void Widen(Parameter weight, CompressedWeight stored)
    {
        weight.Materialize();
        var w = weight.Span;
        for (int r = 0; r < stored.Rows; r++) stored.DecodeRow(r, 0, w.Slice(r * stored.Cols, stored.Cols));
    }

    /// <summary>Bytes of FP8 codes mapped from the checkpoint file (file-backed pages, not anonymous memory).</summary>
    public static long MappedBytes(DeepSeekModel model) =>
        model.NamedModules().Select(m => m.Module).OfType<Linear>().Sum(l => l.InferenceWeight is { IsMapped: true } w ? w.Codes.Length : 0L);

    /// <summary>
    /// Bytes of memory the model's weights fill now: compressed copies plus every materialised fp32 parameter and
    /// buffer. Codes mapped from the checkpoint are left out: file-backed pages the kernel can drop and read again.
    /// </summary>
    public static long WeightBytes(DeepSeekModel model) => InferenceWeights.WeightBytes(model) - MappedBytes(model)
        + model.NamedBuffers().Where(b => !b.Buffer.IsMeta).Sum(b => b.Buffer.Length * 4L);
}
