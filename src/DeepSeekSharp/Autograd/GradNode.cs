using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd;

/// <summary>
/// One recorded op of the tape. An op owns its forward and its backward kernel: <see cref="Backward"/> receives
/// the gradient of the op's output and accumulates into the inputs' gradients (only those that require grad).
/// </summary>
public abstract class GradNode
{
    protected GradNode(params Tensor[] inputs) { Inputs = inputs; }

    public Tensor[] Inputs { get; }

    /// <summary>Accumulates d(loss)/d(input) for each input that needs it, given d(loss)/d(output).</summary>
    public abstract void Backward(Tensor output, float[] outputGrad);

    /// <summary>The gradient buffer of <paramref name="input"/>, zero-filled on first use; null if it needs none.</summary>
    protected static float[]? GradOf(Tensor input)
    {
        if (!input.RequiresGrad) return null;
        return input.Grad ??= new float[checked((int)input.Length)];
    }
}
