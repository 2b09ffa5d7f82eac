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

    public Tensor Forward(Tensor x) => Functional.RmsNorm(x, Weight, Eps);
}
