using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Nn;

/// <summary>
/// A module that maps a tensor to a tensor, y = f(x). Subclasses state f in <see cref="Compute"/> and nothing else:
/// every call runs inside a <see cref="TensorScope"/> of its own, so the intermediates f creates go back to the pool
/// when it returns, except those a recorded backward reads; the result passes to the caller's scope.
/// </summary>
public abstract class Layer : Module
{
    public Tensor Forward(Tensor x)
    {
        using var scope = TensorScope.Begin();
        Tensor y = Compute(x);
        if (RecomputeOutput) y.RecomputeWhenReleased = true;
        return scope.Keep(y);
    }

    /// <summary>The module's math: [.., in] → [.., out].</summary>
    protected abstract Tensor Compute(Tensor x);

    /// <summary>
    /// Recompute this layer's output in the backward instead of keeping it (DeepSeek-V3's recomputation of RMSNorms and
    /// MLA up-projections): once the scope that receives the output ends, its values are dropped and the producing op
    /// rebuilds them, bit-identical, on the backward's first read. Ops that cannot rebuild their output (e.g. an adapted
    /// Linear's sum) keep it; gradients never change.
    /// </summary>
    public bool RecomputeOutput { get; set; }
}

/// <summary>A <see cref="Layer"/> whose math also needs a context (the batch geometry and positions).</summary>
/// <typeparam name="TContext">what every call receives besides its input</typeparam>
public abstract class Layer<TContext> : Module
{
    public Tensor Forward(Tensor x, TContext context)
    {
        using var scope = TensorScope.Begin();
        return scope.Keep(Compute(x, context));
    }

    protected abstract Tensor Compute(Tensor x, TContext context);
}

/// <summary>Layers run one after the other, each reading the previous one's output.</summary>
public static class Sequential
{
    /// <summary>
    /// y = layer_L(… layer_1(x)): the outputs between two layers are handed back to the pool as soon as the next layer
    /// ran, unless a recorded backward reads them (so a no-grad pass holds one layer's activations at a time).
    /// </summary>
    public static Tensor Forward<TContext>(IReadOnlyList<Layer<TContext>> layers, Tensor x, TContext context) =>
        TensorScope.Chain(layers, x, (layer, h) => layer.Forward(h, context));
}
