using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd;

/// <summary>Reverse-mode differentiation over the recorded graph.</summary>
public static class Backprop
{
    /// <summary>
    /// Backpropagates from a scalar <paramref name="loss"/> (seed gradient 1). Leaf tensors that require grad
    /// accumulate into <see cref="Tensor.Grad"/>; intermediate gradients are dropped as soon as they are used,
    /// and the graph is released so activations can be collected.
    /// </summary>
    /// <param name="loss">the scalar [1] to differentiate</param>
    /// <param name="freeActivations">also give the values of every intermediate back to <see cref="StoragePool"/> as
    /// soon as the backward is done with them (training loops: the next step reuses that memory). Reading such an
    /// intermediate afterwards throws; the default keeps them readable, as PyTorch does.</param>
    public static void Backward(Tensor loss, bool freeActivations = false)
    {
        if (loss.Length != 1) throw new ArgumentException("backward needs a scalar loss");
        if (loss.GradFn is null) throw new InvalidOperationException("loss was not computed with grad recording");
        Run(loss, [1f], freeActivations);
        // One backward with freed activations closes a training step: size classes the step did not use go.
        if (freeActivations) StoragePool.TrimUnused();
    }

    /// <summary>
    /// Backpropagates from a non-scalar <paramref name="root"/> whose gradient is <paramref name="rootGrad"/> (at least
    /// its length; taken over), as ops that run private sub-graphs do (the routed experts). The sub-graph's
    /// intermediates are nobody else's, so their values are freed as the backward passes them.
    /// </summary>
    internal static void BackwardFrom(Tensor root, float[] rootGrad)
    {
        if (root.GradFn is null) throw new InvalidOperationException("root was not computed with grad recording");
        if (rootGrad.Length < root.Length) throw new ArgumentException($"gradient of {rootGrad.Length} elements for {root}");
        Run(root, rootGrad, freeActivations: true);
    }

    private static void Run(Tensor root, float[] rootGrad, bool freeActivations)
    {
        var order = TopologicalOrder(root);
        root.Grad = rootGrad;
        for (int i = order.Count - 1; i >= 0; i--)
        {
            Tensor t = order[i];
            GradNode node = t.GradFn!;
            float[]? g = t.Grad;
            if (g is not null) node.Backward(t, g);
            // Intermediates drop their gradient and their link, so memory is freed in reverse order; the gradient
            // buffer goes back to the pool unless an input took it over (AddOp hands its buffer down).
            t.Grad = null;
            t.GradFn = null;
            if (g is not null && !HandedDown(node, g)) StoragePool.Return(g);
            // Every op that reads t's values is t's own or one of its consumers, all done by now (reverse order).
            // Only pooled storage goes (there is nothing to reuse otherwise), and never the root's (the caller reads it).
            if (freeActivations && t.OwnsPooledStorage && !ReferenceEquals(t, root)) t.DropStorage(forever: true);
        }
    }

    private static bool HandedDown(GradNode node, float[] g)
    {
        foreach (var input in node.Inputs)
            if (ReferenceEquals(input.Grad, g)) return true;
        return false;
    }

    private static List<Tensor> TopologicalOrder(Tensor root)
    {
        var order = new List<Tensor>();
        var visited = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(Tensor Tensor, bool Expanded)>();
        stack.Push((root, false));
        while (stack.Count > 0)
        {
            var (t, expanded) = stack.Pop();
            if (expanded) { order.Add(t); continue; }
            if (!visited.Add(t)) continue;
            stack.Push((t, true));
            foreach (Tensor input in t.GradFn!.Inputs)
                if (input.GradFn is not null && !visited.Contains(input)) stack.Push((input, false));
        }
        return order;
    }
}
