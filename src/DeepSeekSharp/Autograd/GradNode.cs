using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd;

/// <summary>
/// One recorded op of the tape. An op owns its forward and its backward kernel: <see cref="Backward"/> receives
/// the gradient of the op's output and accumulates into the inputs' gradients (only those that require grad).
/// </summary>
public abstract class GradNode
{
    /// <summary>An op whose backward reads the values of all its inputs.</summary>
    protected GradNode(params Tensor[] inputs) : this(true, inputs) { }

    /// <param name="readsInputs">whether the backward reads the inputs' values (false when it keeps what it needs
    /// itself, e.g. FP8 copies, or needs none), so that <see cref="Tensor.ReleaseIfUnread"/> knows they may go</param>
    /// <param name="inputs">the op's inputs</param>
    protected GradNode(bool readsInputs, params Tensor[] inputs)
    {
        Inputs = inputs;
        if (readsInputs)
            foreach (var t in inputs) t.BackwardReaders++;
    }

    public Tensor[] Inputs { get; }

    /// <summary>Whether <see cref="Backward"/> reads the values of the op's own output (sigmoid, softmax, attention do).</summary>
    public virtual bool ReadsOutput => true;

    /// <summary>
    /// Whether <see cref="RecomputeOutput"/> can rebuild the op's output now (activation recomputation: the output's
    /// values were dropped after the forward and are rebuilt on their first read in the backward).
    /// </summary>
    internal virtual bool CanRecomputeOutput => false;

    /// <summary>The op's output values again, bit-identical to the forward, in an array rented from <see cref="StoragePool"/>;
    /// null for ops that cannot (see <see cref="CanRecomputeOutput"/>).</summary>
    internal virtual float[]? RecomputeOutput(Tensor output) => null;

    /// <summary>Accumulates d(loss)/d(input) for each input that needs it, given d(loss)/d(output).</summary>
    public abstract void Backward(Tensor output, float[] outputGrad);

    /// <summary>
    /// The gradient of <paramref name="input"/>, exactly as long as the tensor, zero-filled on first use; empty if it
    /// needs none. Ops take gradients through this (or <see cref="GradForWrite"/>), never as arrays: an intermediate's
    /// buffer comes from <see cref="StoragePool"/> and may be longer than the tensor, and a span sized by the array
    /// once reached kernels that size their work by it (RMSNorm's weight gradient).
    /// </summary>
    protected static Span<float> GradOf(Tensor input) =>
        GradArrayOf(input) is { } g ? g.AsSpan(0, checked((int)input.Length)) : default;

    /// <summary>
    /// For ops that form their input gradient during the forward (fused head losses): adds scale · precomputed to
    /// <paramref name="input"/>'s gradient and hands the pooled buffer back (a node's backward runs once). The buffer
    /// may be longer than the tensor: only the tensor's length is read.
    /// </summary>
    protected static void AddPrecomputedGradient(Tensor input, float[]? precomputed, float scale)
    {
        if (precomputed is null) return;
        if (GradOf(input) is { IsEmpty: false } g) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(precomputed.AsSpan(0, g.Length), scale, g, g);
        StoragePool.Return(precomputed);
    }

    /// <summary>
    /// The array behind <see cref="GradOf"/>, for the few APIs that take arrays with offsets (grouped GEMM groups); null
    /// if the input needs none. It may be longer than the tensor (pooled): only the tensor's length may be touched.
    /// A parameter's is exact, as it outlives the step.
    /// </summary>
    protected static float[]? GradArrayOf(Tensor input)
    {
        if (!input.RequiresGrad) return null;
        int length = checked((int)input.Length);
        return input.Grad ??= input is Parameter ? new float[length] : StoragePool.RentZeroed(length);
    }

    /// <summary>
    /// The gradient buffer of <paramref name="input"/> for an op that writes every element of it. When the input has
    /// no gradient yet, it gets a pooled buffer with undefined contents and <paramref name="overwrite"/> = true: the op
    /// stores its gradient instead of accumulating it, which spares zero-filling the buffer and reading those zeros
    /// back. Otherwise (a gradient already accumulated, or a parameter's, which must read as zero where no op wrote)
    /// this is <see cref="GradOf"/> with <paramref name="overwrite"/> = false. Empty if the input needs no gradient;
    /// exactly as long as the tensor otherwise.
    /// </summary>
    protected static Span<float> GradForWrite(Tensor input, out bool overwrite)
    {
        overwrite = false;
        if (!input.RequiresGrad) return default;
        if (input.Grad is not null || input is Parameter) return GradOf(input);
        overwrite = true;
        int length = checked((int)input.Length);
        return (input.Grad = StoragePool.Rent(length)).AsSpan(0, length);
    }
}
