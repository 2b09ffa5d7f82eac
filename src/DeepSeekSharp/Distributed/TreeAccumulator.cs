using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// Sums one rank's consecutive micro-batch gradients as they arrive, in <see cref="PairwiseSumTree"/>'s order: each
/// new leaf is kept, and while a kept partial sum's sibling is also complete (and their parent lies inside the rank's
/// range) the two are added into the parent. When the rank's last micro-batch is in, what remains are the sums of its
/// <see cref="Nodes"/> (one node for a power-of-two world; the whole sum for a single process). Leaves may come in any
/// order (<see cref="CommitLeaf(int)"/>: an expert-parallel rank receives several source ranks' micro-batches at once);
/// the bits do not depend on it, since every node is the sum of its two children. In order, it holds at most
/// ⌈log₂(leaves)⌉ + 1 buffers of <see cref="Length"/> floats, allocated on first use and reused every step.
/// </summary>
public sealed class TreeAccumulator
{
    private readonly PairwiseSumTree _tree;
    private readonly int _first, _end;
    // Complete partial sums, sorted by start.
    private readonly List<(int Start, int End, float[] Sum)> _done = [];
    private readonly bool[] _added;
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
        _added = new bool[leafCount];
    }

    /// <summary>The nodes whose sums this rank ends up holding (<see cref="PairwiseSumTree.Cover"/> of its range).</summary>
    public IReadOnlyList<(int Start, int End)> Nodes { get; }

    public int Length { get; }

    /// <summary>How many micro-batches were added since the last <see cref="Reset"/>.</summary>
    public int Added { get; private set; }

    /// <summary>True once every micro-batch of the range is in.</summary>
    public bool IsComplete => _first + Added == _end;

    /// <summary>The buffer to write the next micro-batch's gradient into, then call <see cref="CommitLeaf()"/>.</summary>
    public Span<float> BeginLeaf()
    {
        if (IsComplete) throw new InvalidOperationException($"all {_end - _first} micro-batches of this rank were already added; Reset for the next step");
        _pending ??= _free.Count > 0 ? _free.Pop() : new float[Length];
        return _pending;
    }

    /// <summary>Adds the buffer filled after <see cref="BeginLeaf"/> as the next micro-batch in order (the first not yet added).</summary>
    public void CommitLeaf()
    {
        int g = _first;
        while (g < _end && _added[g - _first]) g++;
        CommitLeaf(g);
    }

    /// <summary>Adds the buffer filled after <see cref="BeginLeaf"/> as global micro-batch <paramref name="microBatch"/> of the range.</summary>
    public void CommitLeaf(int microBatch)
    {
        if (microBatch < _first || microBatch >= _end)
            throw new ArgumentOutOfRangeException(nameof(microBatch), $"micro-batch {microBatch} is outside this rank's [{_first}, {_end})");
        if (_added[microBatch - _first]) throw new InvalidOperationException($"micro-batch {microBatch} was already added this step");
        var leaf = _pending ?? throw new InvalidOperationException("CommitLeaf without BeginLeaf");
        _pending = null;
        _added[microBatch - _first] = true;
        Added++;
        var (s, e, sum) = (microBatch, microBatch + 1, leaf);
        // Climb while the node is not one of the range's cover nodes (so its parent lies inside the range) and its
        // sibling is complete.
        while (!IsCoverNode(s, e))
        {
            var (ps, pe) = _tree.Parent(s, e);
            int m = PairwiseSumTree.Split(ps, pe);
            var (ss, se) = s == ps ? (m, pe) : (ps, m);
            int at = _done.FindIndex(n => n.Start == ss && n.End == se);
            if (at < 0) break;
            float[] sibling = _done[at].Sum;
            _done.RemoveAt(at);
            TensorPrimitives.Add(sum, sibling, sum);
            _free.Push(sibling);
            (s, e) = (ps, pe);
        }
        int index = _done.FindIndex(n => n.Start > s);
        _done.Insert(index < 0 ? _done.Count : index, (s, e, sum));
    }

    private bool IsCoverNode(int s, int e)
    {
        foreach (var (ns, ne) in Nodes)
            if (ns == s && ne == e) return true;
        return false;
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
        return _done[index].Sum;
    }

    /// <summary>Starts the next step (the buffers are kept).</summary>
    public void Reset()
    {
        foreach (var (_, _, sum) in _done) _free.Push(sum);
        _done.Clear();
        Array.Clear(_added);
        Added = 0;
    }
}
