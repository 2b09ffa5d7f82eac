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
    public static void Backward(Tensor loss)
    {
        if (loss.Length != 1) throw new ArgumentException("backward needs a scalar loss");
        if (loss.GradFn is null) throw new InvalidOperationException("loss was not computed with grad recording");
        var order = TopologicalOrder(loss);
        loss.Grad = [1f];
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
            if (g is not null && g.Length > 1 && !HandedDown(node, g)) GradBufferPool.Return(g);
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
