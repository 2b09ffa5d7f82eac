using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;

namespace DeepSeekSharp.Fp8;

/// <summary>
/// Switches a model to DeepSeek-V3's FP8 training recipe: the Linears of attention and of the MLPs/experts compute
/// with FP8 inputs (<see cref="Linear.Fp8Compute"/>); the embedding, the output head, the MoE gate, the MTP eh_proj,
/// every norm, the attention core and the optimizer stay in fp32 (master weights fp32).
/// </summary>
public static class Fp8Training
{
    /// <returns>how many Linears now compute in FP8</returns>
    public static int Enable(DeepSeekModel model, bool enabled = true)
    {
        int count = 0;
        foreach (var (_, module) in model.NamedModules())
            if (module is Mla or Mlp)
                foreach (var (_, child) in module.Children)
                    if (child is Linear linear) { linear.Fp8Compute = enabled; count++; }
        return count;
    }
}
