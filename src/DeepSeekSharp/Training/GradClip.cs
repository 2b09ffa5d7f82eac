using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Training;

/// <summary>Global-norm gradient clipping (training.md: clip at 1.0).</summary>
public static class GradClip
{
    /// <summary>Returns the global L2 norm before clipping; scales gradients so the norm is at most <paramref name="maxNorm"/>.</summary>
    public static float ClipGlobalNorm(IEnumerable<Parameter> parameters, float maxNorm)
    {
        var list = parameters.Where(p => p.RequiresGrad && p.Grad is not null).ToList();
        double sq = 0;
        foreach (var p in list) sq += TensorPrimitives.SumOfSquares(p.Grad.AsSpan(0, (int)p.Length));
        float norm = (float)Math.Sqrt(sq);
        if (maxNorm > 0 && norm > maxNorm && float.IsFinite(norm))
        {
            float scale = maxNorm / (norm + 1e-6f);
            foreach (var p in list) TensorPrimitives.Multiply(p.Grad.AsSpan(0, (int)p.Length), scale, p.Grad.AsSpan(0, (int)p.Length));
        }
        return norm;
    }
}
