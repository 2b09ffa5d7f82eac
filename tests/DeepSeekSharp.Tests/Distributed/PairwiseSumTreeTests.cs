using DeepSeekSharp.Distributed;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>The fixed summation order of micro-batch gradients, and its split over ranks.</summary>
public class PairwiseSumTreeTests
{
    /// <summary>The documented tree, written from its definition: node [s, e) = [s, m) + [m, e), m = s + ⌈(e − s)/2⌉.</summary>
    internal static float Definition(IReadOnlyList<float[]> leaves, int s, int e, int element)
    {
        if (e - s == 1) return leaves[s][element];
        int m = s + (e - s + 1) / 2;
        return Definition(leaves, s, m, element) + Definition(leaves, m, e, element);
    }

    /// <summary>Gradients whose sums depend on the order: magnitudes from 2^-20 to 2^20, both signs.</summary>
    internal static List<float[]> Leaves(int count, int length, int seed)
    {
        var rng = new Random(seed);
        var leaves = new List<float[]>();
        for (int g = 0; g < count; g++)
        {
            var leaf = new float[length];
            for (int i = 0; i < length; i++) leaf[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-20, 21)));
            leaves.Add(leaf);
        }
        return leaves;
    }

    private static void AssertBitwiseEqual(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}: element {i} is {actual[i]:R}, the tree gives {expected[i]:R}");
    }

    [Fact]
    public void TheSumIsTheDocumentedTreeBitForBit()
    {
        const int Length = 257;
        bool orderMatters = false;
        for (int m = 1; m <= 17; m++)
        {
            var leaves = Leaves(m, Length, seed: m);
            var total = new float[Length];
            PairwiseSumTree.Sum(leaves, total);
            var expected = new float[Length];
            for (int i = 0; i < Length; i++) expected[i] = Definition(leaves, 0, m, i);
            AssertBitwiseEqual(expected, total, $"M = {m}");

            // The inputs are such that another order (left to right) changes bits: the test can see an order change.
            for (int i = 0; i < Length; i++)
            {
                float sequential = 0;
                foreach (var leaf in leaves) sequential += leaf[i];
                orderMatters |= BitConverter.SingleToInt32Bits(sequential) != BitConverter.SingleToInt32Bits(expected[i]);
            }
        }
        Assert.True(orderMatters, "left-to-right sums equal the tree's everywhere: the inputs cannot tell orders apart");
    }

    [Theory]
    [InlineData(12, 1)]
    [InlineData(12, 2)]
    [InlineData(12, 3)]
    [InlineData(12, 4)]
    [InlineData(12, 6)]
    [InlineData(12, 12)]
    [InlineData(16, 8)]
    [InlineData(10, 5)]
    public void RanksSummingTheirCoversThenFinishingTheTreeGiveTheSameBits(int microBatches, int ranks)
    {
        const int Length = 100;
        var leaves = Leaves(microBatches, Length, seed: 7);
        var expected = new float[Length];
        for (int i = 0; i < Length; i++) expected[i] = Definition(leaves, 0, microBatches, i);

        // What the ranks do, in one process: each sums its consecutive micro-batches into its cover's nodes, and the
        // owner adds everyone's nodes in the tree's order.
        var tree = new PairwiseSumTree(microBatches);
        int perRank = microBatches / ranks;
        var nodes = new List<(int, int)>();
        var partials = new List<float>();
        for (int r = 0; r < ranks; r++)
        {
            var rank = new TreeAccumulator(tree, r * perRank, perRank, Length);
            for (int g = r * perRank; g < (r + 1) * perRank; g++) rank.Add(leaves[g]);
            Assert.True(rank.IsComplete);
            nodes.AddRange(rank.Nodes);
            for (int j = 0; j < rank.Nodes.Count; j++) partials.AddRange(rank.Root(j).ToArray());
        }
        var sums = partials.ToArray();
        tree.CombineCover(nodes, sums, Length);
        AssertBitwiseEqual(expected, sums[..Length], $"M = {microBatches}, N = {ranks}");
    }

    [Fact]
    public void PowerOfTwoRanksSendOneNodeEachAndOtherCountsAFew()
    {
        foreach (int m in new[] { 4, 8, 12, 16, 24, 40 })
            foreach (int n in new[] { 1, 2, 4 })
            {
                if (m % n != 0) continue;
                var tree = new PairwiseSumTree(m);
                for (int r = 0; r < n; r++)
                    Assert.Equal([(r * m / n, (r + 1) * m / n)], tree.Cover(r * m / n, (r + 1) * m / n));
            }
        // The documented example: M = 6 over 3 ranks, [0,3) = [0,2) + [2,3) and [3,6) = [3,5) + [5,6); rank 1 holds
        // [2, 4), leaves of two different nodes, and rank 2 holds [4, 6), a leaf of [3,5) and the leaf [5,6).
        var six = new PairwiseSumTree(6);
        Assert.Equal([(0, 2)], six.Cover(0, 2));
        Assert.Equal([(2, 3), (3, 4)], six.Cover(2, 4));
        Assert.Equal([(4, 5), (5, 6)], six.Cover(4, 6));
        Assert.True(six.IsNode(0, 3) && six.IsNode(3, 6) && six.IsNode(3, 5) && !six.IsNode(2, 4));
    }

    [Fact]
    public void NodesThatDoNotPartitionTheMicroBatchesAreRefused()
    {
        var tree = new PairwiseSumTree(4);
        var sums = new float[3];
        Assert.Throws<ArgumentException>(() => tree.CombineCover([(0, 2), (3, 4), (2, 3)], sums, 1));
        Assert.Throws<ArgumentException>(() => tree.CombineCover([(0, 2)], sums, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => tree.Cover(2, 2));
    }
}
