using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Nn;

/// <summary>RMSNorm(x) = x · rsqrt(mean(x²) + eps) · weight, in fp32.</summary>
public sealed class RmsNorm : Layer
{
    public RmsNorm(int dim, float eps, bool materialize)
    {
        Eps = eps;
        Weight = Param("weight", new Parameter([dim], materialize) { WeightDecay = false });
    }

    public float Eps { get; }

    /// <summary>[dim]</summary>
    public Parameter Weight { get; }

    protected override Tensor Compute(Tensor x) => Functional.RmsNorm(x, Weight, Eps);
}
