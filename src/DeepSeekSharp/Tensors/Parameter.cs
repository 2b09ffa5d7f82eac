namespace DeepSeekSharp.Tensors;

/// <summary>
/// A trainable tensor owned by a module. Freezing (fine-tuning, ESFT) is <c>RequiresGrad = false</c>.
/// </summary>
public sealed class Parameter : Tensor
{
    public Parameter(int[] shape, bool materialize) : base(shape, materialize ? new float[checked((int)ShapeUtil.Numel(shape))] : null)
    {
        RequiresGrad = true;
    }

    /// <summary>Whether weight decay applies (false for norms, biases and embeddings by default).</summary>
    public bool WeightDecay { get; init; } = true;
}
