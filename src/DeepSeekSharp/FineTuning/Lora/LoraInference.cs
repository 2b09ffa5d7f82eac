using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>
/// Runs a model with a PEFT LoRA adapter unmerged (<c>--adapter DIR</c> of <c>dss forward</c>, <c>generate</c>,
/// <c>chat</c>, <c>serve</c>, <c>eval</c>): the base keeps its weights and their storage (fp32, BF16 or FP8 blocks),
/// and every adapted Linear adds scale·(x·Aᵀ)·Bᵀ to its base product.
/// </summary>
public static class LoraInference
{
    /// <summary>Checks that <paramref name="dir"/> is a folder with an adapter_config.json; one error line naming what is missing.</summary>
    public static void RequireAdapterFolder(string dir)
    {
        if (File.Exists(dir)) throw new DeepSeekSharpException($"{dir}: is a file; an adapter is a folder with {LoraAdapters.ConfigFile} and {LoraAdapters.WeightsFile}");
        if (!Directory.Exists(dir)) throw new DeepSeekSharpException($"{dir}: adapter folder not found");
        string config = Path.Combine(dir, LoraAdapters.ConfigFile);
        if (!File.Exists(config)) throw new DeepSeekSharpException($"{config}: not found (not a PEFT adapter folder; a LoRA run's checkpoint-<step> folders are)");
    }

    /// <summary>
    /// Puts the adapter of <paramref name="dir"/> on <paramref name="model"/> for inference (<see cref="LoraAdapters.Load"/>),
    /// with nothing left trainable. A <c>modules_to_save</c> tensor of a Linear whose weight is stored compressed is read
    /// in fp32 and compressed again the same way.
    /// </summary>
    public static LoraApplyResult Attach(DeepSeekModel model, string dir)
    {
        RequireAdapterFolder(dir);
        LoraApplyResult result;
        using (GradMode.NoGrad()) result = LoraAdapters.Load(model, dir);
        foreach (var (linear, storage) in result.WidenedFromCompressed)
        {
            linear.InferenceWeight = CompressedWeight.Compress(linear.Weight.Span, linear.OutFeatures, linear.InFeatures, storage);
            linear.Weight.Release();
        }
        foreach (var (_, p) in model.NamedParameters()) p.RequiresGrad = false;
        return result;
    }
}
