using DeepSeekSharp.Distributed;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>The pieces the data-parallel trainer's norm and configuration rest on, in one process.</summary>
public class BlockSquaresTests
{
    [Fact]
    public void ABlockSumDependsOnItsValuesOnlyNotWhereTheyLie()
    {
        var rng = new Random(5);
        var values = new float[4 * BlockSquares.Length + 7];
        foreach (ref float v in values.AsSpan()) v = (float)(rng.NextDouble() * 2 - 1) * (rng.Next(4) == 0 ? 1e3f : 1f);
        var atZero = new double[4];
        BlockSquares.Compute(values.AsSpan(0, 4 * BlockSquares.Length), atZero);
        // The same blocks at every float offset within a 64-byte line: a library sum that aligns its loads would differ.
        for (int shift = 1; shift < 8; shift++)
        {
            var moved = new float[values.Length];
            values.AsSpan(0, 4 * BlockSquares.Length).CopyTo(moved.AsSpan(shift));
            var sums = new double[4];
            BlockSquares.Compute(moved.AsSpan(shift, 4 * BlockSquares.Length), sums);
            Assert.Equal(atZero.Select(BitConverter.DoubleToInt64Bits), sums.Select(BitConverter.DoubleToInt64Bits));
        }
        // And each is the sum of squares (to double rounding, summed in another order here).
        for (int b = 0; b < 4; b++)
        {
            double reference = 0;
            foreach (float v in values.AsSpan(b * BlockSquares.Length, BlockSquares.Length)) reference += (double)v * v;
            Assert.Equal(reference, atZero[b], reference * 1e-14);
        }
        Assert.Throws<ArgumentException>(() => BlockSquares.Compute(values.AsSpan(0, 1000), new double[1]));
    }

    [Fact]
    public void AlignedShardsStartOnBlockBoundariesForEveryRankCount()
    {
        foreach (int length in (int[])[1, 1023, 1025, 5000, 1 << 20])
            for (int ranks = 1; ranks <= 6; ranks++)
            {
                var layout = new ShardLayout(length, ranks, BlockSquares.Length);
                Assert.Equal(0, layout.ShardLength % BlockSquares.Length);
                Assert.True((long)layout.ShardLength * ranks >= length);
                Assert.True(layout.ShardLength - BlockSquares.Length < (length + ranks - 1) / ranks, "no more than one block of padding per shard");
                Assert.Equal(length, Enumerable.Range(0, ranks).Sum(layout.Count));
            }
    }

    [Theory]
    [InlineData("zero_stage=2")]
    [InlineData("zero_stage=-1")]
    public void UnsupportedZeroStagesAreRefusedNamingTheKey(string setting)
    {
        var e = Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(null, [setting, "datasets=x.txt"]));
        Assert.Contains("zero_stage", e.Message);
        Assert.Contains("must be 0 or 1", e.Message);
    }
}
