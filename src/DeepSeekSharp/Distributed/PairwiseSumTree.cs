using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// The one order in which the M micro-batch gradients of an optimizer step are summed, whichever processes hold them:
/// a binary tree over the global micro-batch indices 0..M−1. Node [s, e) with e − s ≥ 2 is the sum of its children
/// [s, m) and [m, e), m = s + ⌈(e − s)/2⌉ (the left child takes the odd leaf); a leaf [g, g+1) is micro-batch g's
/// gradient. Float addition is commutative, so each node's bits depend only on its children's: the tree alone fixes
/// the result.
/// </summary>
/// <remarks>
/// With N ranks each holding M/N consecutive micro-batches, rank r sums the maximal nodes inside its range
/// (<see cref="Cover"/>) and the owner of each shard finishes the tree from everyone's nodes
/// (<see cref="CombineCover"/>). When N is a power of two dividing M, every range is one node (its halvings are exact), so
/// each rank sends one partial sum; for other N a range is covered by a few nodes (at most about 2·log₂(M/N)) and the
/// result is still bit-identical. M = 8, N = 2: ranks sum [0,4) and [4,8), the owner adds the two. M = 6, N = 3: the
/// tree is [0,3) = [0,2) + [2,3), [3,6) = [3,5) + [5,6); rank 1 holds [2,4), covered by the leaves [2,3) and [3,4).
/// </remarks>
public readonly struct PairwiseSumTree
{
    public PairwiseSumTree(int leaves)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(leaves, 1);
        Leaves = leaves;
    }

    /// <summary>M, the number of micro-batches summed.</summary>
    public int Leaves { get; }

    /// <summary>Where node [start, end) splits into its two children.</summary>
    public static int Split(int start, int end) => start + (end - start + 1) / 2;

    /// <summary>True when [start, end) is a node of the tree.</summary>
    public bool IsNode(int start, int end)
    {
        int s = 0, e = Leaves;
        while (true)
        {
            if (s == start && e == end) return true;
            if (e - s < 2 || start < s || end > e) return false;
            int m = Split(s, e);
            if (end <= m) e = m;
            else if (start >= m) s = m;
            else return false;
        }
    }

    /// <summary>The parent of node [start, end) (not the root).</summary>
    public (int Start, int End) Parent(int start, int end)
    {
        int s = 0, e = Leaves;
        while (e - s >= 2)
        {
            int m = Split(s, e);
            if ((start == s && end == m) || (start == m && end == e)) return (s, e);
            if (end <= m) e = m;
            else if (start >= m) s = m;
            else break;
        }
        throw new ArgumentException($"[{start}, {end}) is not a node below the root of the {Leaves}-leaf tree");
    }

    /// <summary>True when [s1, e1) and [e1, e2) are the two children of the node [s1, e2).</summary>
    public bool AreSiblings(int s1, int e1, int e2) => Split(s1, e2) == e1 && IsNode(s1, e2);

    /// <summary>The maximal nodes inside [start, end), left to right: what a rank holding those micro-batches sums.</summary>
    public List<(int Start, int End)> Cover(int start, int end)
    {
        if (start < 0 || end > Leaves || start >= end)
            throw new ArgumentOutOfRangeException(nameof(start), $"[{start}, {end}) is not a non-empty range of the {Leaves} micro-batches");
        var nodes = new List<(int, int)>();
        AddCover(0, Leaves, start, end, nodes);
        return nodes;
    }

    private static void AddCover(int s, int e, int start, int end, List<(int, int)> nodes)
    {
        if (e <= start || s >= end) return;
        if (start <= s && e <= end)
        {
            nodes.Add((s, e));
            return;
        }
        int m = Split(s, e);
        AddCover(s, m, start, end, nodes);
        AddCover(m, e, start, end, nodes);
    }

    /// <summary>
    /// Finishes the tree in place: <paramref name="partialSums"/> holds, one after another in leaf order, the sums of
    /// <paramref name="nodes"/> (nodes that partition 0..M−1, such as the concatenated covers of all ranks), each
    /// <paramref name="length"/> long. Leaves the total in the first <paramref name="length"/> elements.
    /// </summary>
    public void CombineCover(IReadOnlyList<(int Start, int End)> nodes, Span<float> partialSums, int length)
    {
        if ((long)nodes.Count * length > partialSums.Length)
            throw new ArgumentException($"{nodes.Count} partial sums of {length} need {(long)nodes.Count * length} elements, got {partialSums.Length}");
        int next = 0;
        int first = Combine(0, Leaves, nodes, ref next, partialSums, length);
        if (next != nodes.Count) throw new ArgumentException($"the {nodes.Count} nodes do not partition the {Leaves} micro-batches");
        if (first != 0) throw new InvalidOperationException("the tree's total must land in the first partial sum");
    }

    /// <summary>Sums node [s, e) from the partial sums; returns the index of the partial sum that now holds it.</summary>
    private static int Combine(int s, int e, IReadOnlyList<(int Start, int End)> nodes, ref int next, Span<float> sums, int length)
    {
        if (next >= nodes.Count) throw new ArgumentException($"the nodes end before micro-batch {s}");
        var (ns, ne) = nodes[next];
        if (ns == s && ne == e) return next++;
        if (ns != s || ne > e || e - s < 2) throw new ArgumentException($"node [{ns}, {ne}) is not a tree node inside [{s}, {e})");
        int m = Split(s, e);
        int left = Combine(s, m, nodes, ref next, sums, length);
        int right = Combine(m, e, nodes, ref next, sums, length);
        Span<float> into = sums.Slice(left * length, length);
        TensorPrimitives.Add(into, sums.Slice(right * length, length), into);
        return left;
    }

    /// <summary>The tree's sum of all M leaves held in one process (the single-process reference of the parallel sum).</summary>
    /// <param name="leaves">M buffers of the same length, leaf g = micro-batch g</param>
    /// <param name="total">receives the sum</param>
    public static void Sum(IReadOnlyList<float[]> leaves, Span<float> total)
    {
        var tree = new PairwiseSumTree(leaves.Count);
        var sum = new TreeAccumulator(tree, 0, leaves.Count, total.Length);
        foreach (var leaf in leaves) sum.Add(leaf);
        sum.Root(0).CopyTo(total);
    }
}
