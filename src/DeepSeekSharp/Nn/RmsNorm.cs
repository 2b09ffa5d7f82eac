using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Nn;

/// <summary>RMSNorm(x) = x · rsqrt(mean(x²) + eps) · weight, in fp32.</summary>
public sealed class RmsNorm : Module
{
    public RmsNorm(int dim, float eps, bool materialize)
    {
        Eps = eps;
        Weight = Param("weight", new Parameter([dim], materialize) { WeightDecay = false });
    }

    public float Eps { get; }

    /// <summary>[dim]</summary>
    public Parameter Weight { get; }

    /// <summary>Recompute this norm's output in the backward instead of keeping it (set by <c>recompute_norms</c>).</summary>
    public bool RecomputeOutput { get; set; }

    public Tensor Forward(Tensor x) => Functional.RmsNorm(x, Weight, Eps);

    /// <summary>
    /// Called by the owning module once the forward consumers of <paramref name="output"/> (a result of
    /// <see cref="Forward"/>) have run: drops it if no recorded op reads it, otherwise, with
    /// <see cref="RecomputeOutput"/>, drops it to be recomputed from the input (which the norm's own backward keeps).
    /// </summary>
    public void ReleaseOutput(Tensor output)
    {
        if (!output.ReleaseIfUnread() && RecomputeOutput) output.DropForRecompute();
    }
}
