namespace DeepSeekSharp.Tensors;

/// <summary>
/// The lifetime of the pooled tensors created while it is open, on this thread (the dispose-scope pattern): when it
/// ends, every tensor created inside it that was not handed out with <see cref="Keep"/> gives its storage back to
/// <see cref="StoragePool"/> unless a recorded backward reads it (<see cref="Tensor.ReleaseIfUnread"/>), or, when its
/// owner asked for recomputation (<see cref="Tensor.RecomputeWhenReleased"/>), drops its values for the producing op to
/// rebuild in the backward; kept tensors pass to the enclosing scope. Every <see cref="Nn.Layer"/> call runs in one, so
/// model code needs no lifetime calls of its own.
/// </summary>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? _current;
    private readonly TensorScope? _enclosing;
    private readonly List<Tensor> _created = [];
    private readonly List<Tensor> _kept = new(1); // usually the one result
    private bool _ended;

    private TensorScope()
    {
        _enclosing = _current;
        _current = this;
    }

    /// <summary>Opens a scope on this thread; dispose it on the same thread.</summary>
    public static TensorScope Begin() => new();

    internal static void Register(Tensor tensor) => _current?._created.Add(tensor);

    /// <summary>Hands <paramref name="result"/> out of the scope: it outlives it and belongs to the enclosing one.</summary>
    public Tensor Keep(Tensor result)
    {
        _kept.Add(result);
        return result;
    }

    /// <summary>
    /// Runs <paramref name="step"/> for each of <paramref name="steps"/> in turn, each on the previous one's output. An
    /// output between two steps is handed back to the pool as soon as the next step ran, unless a recorded backward
    /// reads it, so a no-grad pass through a stack of layers holds one layer's activations at a time. The chain's input
    /// belongs to the caller and its output is returned.
    /// </summary>
    public static Tensor Chain<T>(IReadOnlyList<T> steps, Tensor x, Func<T, Tensor, Tensor> step)
    {
        Tensor h = x;
        foreach (var s in steps)
        {
            Tensor next = step(s, h);
            if (!ReferenceEquals(h, x)) h.ReleaseIfUnread();
            h = next;
        }
        return h;
    }

    private bool IsKept(Tensor tensor)
    {
        foreach (var kept in _kept) if (ReferenceEquals(kept, tensor)) return true;
        return false;
    }

    public void Dispose()
    {
        if (_ended) return;
        _ended = true;
        if (_current != this) throw new InvalidOperationException("tensor scopes must end in the reverse order they began, on their own thread");
        _current = _enclosing;
        foreach (var tensor in _created)
        {
            if (IsKept(tensor)) _enclosing?._created.Add(tensor);
            else if (!(tensor.RecomputeWhenReleased && tensor.DropForRecompute())) tensor.ReleaseIfUnread();
        }
    }
}
