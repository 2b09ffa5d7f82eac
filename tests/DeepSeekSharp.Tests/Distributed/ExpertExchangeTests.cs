using DeepSeekSharp.Distributed;
using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>
/// The pieces of expert parallelism that run in one process: a rank's partial sums when its micro-batches arrive out
/// of order (as an expert's per-source gradients do), and what each dispatch format does to a row.
/// </summary>
public sealed class ExpertExchangeTests
{
    [Fact]
    public void LeavesInAnyOrderGiveTheTreesBits()
    {
        const int Length = 129;
        var rng = new Random(5);
        foreach (var (m, ranks) in new[] { (8, 2), (8, 1), (12, 3), (6, 2), (16, 4), (5, 1) })
        {
            var leaves = PairwiseSumTreeTests.Leaves(m, Length, seed: m * 31 + ranks);
            var expected = new float[Length];
            for (int i = 0; i < Length; i++) expected[i] = PairwiseSumTreeTests.Definition(leaves, 0, m, i);
            var tree = new PairwiseSumTree(m);
            int per = m / ranks;
            var nodes = new List<(int, int)>();
            var sums = new List<float>();
            for (int r = 0; r < ranks; r++)
            {
                // An expert-parallel order: the rank's range seen as interleaved sources (stride 2), shuffled.
                var order = Enumerable.Range(r * per, per).ToArray();
                rng.Shuffle(order);
                var acc = new TreeAccumulator(tree, r * per, per, Length);
                foreach (int g in order)
                {
                    leaves[g].CopyTo(acc.BeginLeaf());
                    acc.CommitLeaf(g);
                }
                Assert.True(acc.IsComplete);
                Assert.Equal(tree.Cover(r * per, (r + 1) * per), acc.Nodes);
                for (int j = 0; j < acc.Nodes.Count; j++)
                {
                    nodes.Add(acc.Nodes[j]);
                    sums.AddRange(acc.Root(j).ToArray());
                }
            }
            var all = sums.ToArray();
            tree.CombineCover(nodes, all, Length);
            for (int i = 0; i < Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(all[i]),
                    $"M = {m}, {ranks} rank(s): element {i} is {all[i]:R}, the tree gives {expected[i]:R}");
        }
    }

    [Fact]
    public void ALeafAddedTwiceOrOutsideTheRangeIsRefused()
    {
        var acc = new TreeAccumulator(new PairwiseSumTree(8), 4, 4, 3);
        acc.BeginLeaf();
        Assert.Throws<ArgumentOutOfRangeException>(() => acc.CommitLeaf(3));
        acc.CommitLeaf(6);
        acc.BeginLeaf();
        Assert.Throws<InvalidOperationException>(() => acc.CommitLeaf(6));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(127)]
    [InlineData(128)]
    [InlineData(200)]
    public void EachFormatRoundsARowAsDocumented(int hidden)
    {
        using var one = new SingleProcessCommunicator();
        const int Rows = 7;
        var rng = new Random(hidden);
        var x = new float[Rows * hidden];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-12, 6)));
        x[0] = 0;
        var y = new float[x.Length];

        long sent = RowExchange.Exchange(one, WireFormat.Fp32, x, [Rows], y, [Rows], hidden);
        Assert.Equal(0, sent); // nothing leaves a world of one
        Assert.Equal(x, y);

        // BF16 keeps 8 significant bits: round to nearest is within half an ulp, 2^-8·|x|.
        RowExchange.Exchange(one, WireFormat.Bf16, x, [Rows], y, [Rows], hidden);
        for (int i = 0; i < x.Length; i++)
            Assert.True(Math.Abs(y[i] - x[i]) <= Math.Abs(x[i]) * Math.Pow(2, -8), $"bf16: {x[i]:R} came back as {y[i]:R}");

        // E4M3 with a 1×128 tile scale s = amax/448: |error| ≤ 2^-4·|x| for normals, ≤ 2^-10·s below 2^-6·s (subnormals).
        RowExchange.Exchange(one, WireFormat.Fp8, x, [Rows], y, [Rows], hidden);
        bool rounded = false;
        for (int r = 0; r < Rows; r++)
            for (int c0 = 0; c0 < hidden; c0 += 128)
            {
                var tile = x.AsSpan(r * hidden + c0, Math.Min(128, hidden - c0));
                float amax = 0;
                foreach (float v in tile) amax = Math.Max(amax, Math.Abs(v));
                float s = amax == 0 ? 1 : amax / Fp8Quantizer.E4M3Max;
                for (int c = 0; c < tile.Length; c++)
                {
                    int i = r * hidden + c0 + c;
                    Assert.True(Math.Abs(y[i] - x[i]) <= (Math.Pow(2, -4) * Math.Abs(x[i]) + Math.Pow(2, -10) * s) * 1.001, $"fp8: {x[i]:R} came back as {y[i]:R} (scale {s:R})");
                    rounded |= y[i] != x[i];
                }
            }
        Assert.True(rounded, "fp8 changed no value: the format was not applied");
        Assert.Equal(hidden + 4L * ((hidden + 127) / 128), RowExchange.RowBytes(WireFormat.Fp8, hidden));
    }
}
