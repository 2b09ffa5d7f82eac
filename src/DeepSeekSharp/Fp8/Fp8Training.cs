using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;

namespace DeepSeekSharp.Fp8;

/// <summary>
/// Training precisions (training.md): <c>fp32</c>; <c>bf16</c> — every Linear computes with a BF16 copy of its fp32
/// master weight; <c>fp8</c> — DeepSeek-V3's recipe: the attention/MLP/expert Linears
/// (<see cref="Fp8Checkpoint.Fp8Linears"/>) run their three GEMMs on FP8 inputs, while the embedding, output head,
/// MoE gate, MTP eh_proj, norms, attention core and optimizer stay fp32.
/// </summary>
public static class Fp8Training
{
    public static readonly string[] Precisions = ["fp32", "bf16", "fp8"];

    /// <summary>The AdamW moment storage a precision implies: DeepSeek-V3's FP8 recipe keeps the moments in BF16.</summary>
    public static Optim.MomentPrecision DefaultMoments(string precision) =>
        precision == "fp8" ? Optim.MomentPrecision.Bf16 : Optim.MomentPrecision.Fp32;

    /// <param name="model">the model to switch</param>
    /// <param name="precision">fp32, bf16 or fp8</param>
    /// <param name="swigluCache">with fp8: cache the SwiGLU inputs of every MLP/expert in FP8 (V3's recipe)</param>
    /// <param name="e5m6OProjCache">with fp8: cache the input of each attention output projection (o_proj) in E5M6
    /// with power-of-two scales rather than E4M3 (V3's recipe)</param>
    /// <param name="bf16Combine">with fp8: the MoE combine keeps the routed experts' outputs for its backward in BF16
    /// (V3's recipe)</param>
    /// <returns>how many Linears changed precision</returns>
    public static int Apply(DeepSeekModel model, string precision, bool swigluCache = true, bool e5m6OProjCache = true, bool bf16Combine = true)
    {
        int count = 0;
        switch (precision)
        {
            case "fp32":
                break;
            case "fp8":
                foreach (var (_, linear) in Fp8Checkpoint.Fp8Linears(model)) { linear.Fp8Compute = true; count++; }
                foreach (var (_, module) in model.NamedModules())
                {
                    if (module is Mlp mlp) mlp.Fp8SwigluCache = swigluCache && mlp.GateProj.Fp8Compute;
                    if (module is Mla mla) mla.OProj.Fp8E5M6InputCache = e5m6OProjCache && mla.OProj.Fp8Compute;
                    if (module is Moe moe) moe.Bf16CombineCache = bf16Combine;
                }
                break;
            case "bf16":
                foreach (var (_, module) in model.NamedModules())
                    if (module is Linear linear) { linear.Bf16Compute = true; count++; }
                break;
            default:
                throw new DeepSeekSharpException($"precision '{precision}' is not one of {string.Join(", ", Precisions)}");
        }
        return count;
    }
}
