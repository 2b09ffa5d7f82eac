using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// Sums one rank's consecutive micro-batch gradients as they arrive, in <see cref="PairwiseSumTree"/>'s order: each
/// new leaf is pushed, and while the two newest partial sums are the children of one node they are added. When the
/// rank's last micro-batch is in, what remains are the sums of its <see cref="Nodes"/> (one node for a power-of-two
/// world; the whole sum for a single process). Holds at most ⌈log₂(leaves)⌉ + 1 buffers of <see cref="Length"/> floats,
/// allocated on first use and reused every step.
/// </summary>
public sealed class TreeAccumulator
{
    private readonly PairwiseSumTree _tree;
    private readonly int _first, _end;
    private readonly List<(int Start, int End, float[] Sum)> _stack = [];
    private readonly Stack<float[]> _free = new();
    private float[]? _pending;

    /// <param name="tree">the step's tree over all M micro-batches</param>
    /// <param name="firstLeaf">global index of this rank's first micro-batch</param>
    /// <param name="leafCount">how many consecutive micro-batches this rank sums</param>
    /// <param name="length">floats per gradient</param>
    public TreeAccumulator(PairwiseSumTree tree, int firstLeaf, int leafCount, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _tree = tree;
        _first = firstLeaf;
        _end = firstLeaf + leafCount;
        Nodes = tree.Cover(firstLeaf, _end);
        Length = length;
    }

    /// <summary>The nodes whose sums this rank ends up holding (<see cref="PairwiseSumTree.Cover"/> of its range).</summary>
    public IReadOnlyList<(int Start, int End)> Nodes { get; }

    public int Length { get; }

    /// <summary>How many micro-batches were added since the last <see cref="Reset"/>.</summary>
    public int Added { get; private set; }

    /// <summary>True once every micro-batch of the range is in.</summary>
    public bool IsComplete => _first + Added == _end;

    /// <summary>The buffer to write the next micro-batch's gradient into, then call <see cref="CommitLeaf"/>.</summary>
    public Span<float> BeginLeaf()
    {
        if (IsComplete) throw new InvalidOperationException($"all {_end - _first} micro-batches of this rank were already added; Reset for the next step");
        _pending ??= _free.Count > 0 ? _free.Pop() : new float[Length];
        return _pending;
    }

    /// <summary>Adds the buffer filled after <see cref="BeginLeaf"/> as the next micro-batch.</summary>
    public void CommitLeaf()
    {
        var leaf = _pending ?? throw new InvalidOperationException("CommitLeaf without BeginLeaf");
        _pending = null;
        int g = _first + Added++;
        _stack.Add((g, g + 1, leaf));
        while (_stack.Count >= 2)
        {
            var (s1, e1, left) = _stack[^2];
            var (_, e2, right) = _stack[^1];
            if (!_tree.AreSiblings(s1, e1, e2)) break;
            TensorPrimitives.Add(left, right, left);
            _free.Push(right);
            _stack.RemoveAt(_stack.Count - 1);
            _stack[^1] = (s1, e2, left);
        }
    }

    /// <summary>Adds a copy of <paramref name="gradient"/> as the next micro-batch.</summary>
    public void Add(ReadOnlySpan<float> gradient)
    {
        if (gradient.Length != Length) throw new ArgumentException($"a gradient of {gradient.Length} floats, expected {Length}");
        gradient.CopyTo(BeginLeaf());
        CommitLeaf();
    }

    /// <summary>The sum of <see cref="Nodes"/>[<paramref name="index"/>], once <see cref="IsComplete"/>.</summary>
    public ReadOnlySpan<float> Root(int index)
    {
        if (!IsComplete) throw new InvalidOperationException($"{Added} of {_end - _first} micro-batches added: the partial sums are not final yet");
        return _stack[index].Sum;
    }

    /// <summary>Starts the next step (the buffers are kept).</summary>
    public void Reset()
    {
        foreach (var (_, _, sum) in _stack) _free.Push(sum);
        _stack.Clear();
        Added = 0;
    }
}
