using DeepSeekSharp.Distributed;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>The reduction pieces in one process: shards, flat views of parameter lists, the bucket's step protocol.</summary>
public class GradientBucketTests
{
    [Fact]
    public void ShardsArePaddedEqualBlocksThatCoverEveryElementOnce()
    {
        for (int length = 0; length <= 40; length++)
            for (int ranks = 1; ranks <= 6; ranks++)
            {
                var layout = new ShardLayout(length, ranks);
                Assert.Equal((length + ranks - 1) / ranks, layout.ShardLength);
                Assert.True(layout.PaddedLength >= length && layout.PaddedLength - length < ranks);
                var owner = new int[length];
                Array.Fill(owner, -1);
                for (int r = 0; r < ranks; r++)
                {
                    Assert.InRange(layout.Count(r), 0, layout.ShardLength);
                    for (int i = layout.Start(r); i < layout.Start(r) + layout.Count(r); i++)
                    {
                        Assert.Equal(-1, owner[i]);
                        owner[i] = r;
                    }
                }
                Assert.DoesNotContain(-1, owner);
            }
    }

    [Fact]
    public void FlatSegmentsCopyAndWalkAcrossSegmentBoundaries()
    {
        float[] a = [1, 2, 3], empty = [], b = [4, 5, 6, 7, 8], c = [9];
        var flat = new FlatSegments([a, empty, b, c]);
        Assert.Equal(9, flat.Length);
        var middle = new float[5];
        flat.CopyTo(2, middle);
        Assert.Equal([3f, 4, 5, 6, 7], middle);
        flat.CopyFrom([-3f, -4, -5, -6, -7, -8, -9], 2);
        Assert.Equal([1f, 2, -3], a);
        Assert.Equal([-4f, -5, -6, -7, -8], b);
        Assert.Equal([-9f], c);
        Assert.Equal([(0, 2, 1, 2), (2, 0, 5, 3), (3, 0, 1, 8)], flat.Pieces(2, 7).ToList());
        Assert.Equal([(2, 1, 2, 4)], flat.Pieces(4, 2).ToList());
        Assert.Throws<ArgumentOutOfRangeException>(() => flat.CopyTo(5, new float[5]));
    }

    [Fact]
    public void OneProcessBucketSumsItsMicroBatchesInTreeOrderAndLeavesTheBuffersForTheNextBackward()
    {
        const int MicroBatches = 6;
        var leaves = PairwiseSumTreeTests.Leaves(MicroBatches, 10, seed: 3);
        float[] first = new float[4], second = new float[6];
        using var world = new SingleProcessCommunicator();
        using var bucket = new GradientBucket(world, [first, second], MicroBatches);
        Assert.Equal((0, MicroBatches), bucket.MicroBatches);
        for (int step = 0; step < 2; step++)
        {
            foreach (var leaf in leaves)
            {
                // A backward accumulates into the buffers, which the bucket emptied after the previous micro-batch.
                for (int i = 0; i < 4; i++) first[i] += leaf[i];
                for (int i = 0; i < 6; i++) second[i] += leaf[4 + i];
                bucket.AddMicroBatch();
                Assert.All(first, x => Assert.Equal(0f, x));
            }
            Assert.Throws<InvalidOperationException>(() => bucket.AddMicroBatch());
            bucket.StartReduction();
            bucket.WaitAll();
            for (int i = 0; i < 10; i++)
            {
                float expected = PairwiseSumTreeTests.Definition(leaves, 0, MicroBatches, i);
                Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(i < 4 ? first[i] : second[i - 4]));
            }
            first.AsSpan().Clear();
            second.AsSpan().Clear();
        }
    }

    [Fact]
    public void BucketMisuseIsRefusedBeforeAnythingTravels()
    {
        using var world = new SingleProcessCommunicator();
        using var bucket = new GradientBucket(world, [new float[3]], 2);
        bucket.AddMicroBatch();
        Assert.Throws<InvalidOperationException>(() => bucket.StartReduction()); // one micro-batch of two
        Assert.Throws<InvalidOperationException>(() => bucket.WaitShard());
        bucket.AddMicroBatch();
        bucket.StartReduction();
        Assert.Throws<InvalidOperationException>(() => bucket.StartReduction());
        Assert.Equal(3, bucket.WaitShard().Length);
    }

    [Fact]
    public void SingleProcessCollectivesAreCopiesAndCheckTheirArguments()
    {
        using var world = new SingleProcessCommunicator();
        Assert.Equal((0, 1), (world.Rank, world.Size));
        float[] send = [1, 2, 3], receive = new float[3];
        world.AllReduce<float>(send, receive, ReduceOp.Sum);
        Assert.Equal(send, receive);
        Assert.Throws<ArgumentException>(() => world.AllGather<float>(send, new float[2]));
        Assert.Throws<ArgumentException>(() => world.AllReduce<float>(send.AsSpan(0, 2), send.AsSpan(1, 2), ReduceOp.Sum));
        Assert.Throws<ArgumentException>(() => world.AllToAllV<float>(send, [4], [0], receive, [4], [0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => world.Broadcast<float>(send, 1));
        using var request = new CollectiveRequest();
        world.StartAllGather<float>(send, receive, request);
        Assert.True(request.Test());
    }

    [Fact]
    public void TheSelfCheckPassesInOneProcessWithTheDigestsOfTheDefinition()
    {
        using var world = new SingleProcessCommunicator();
        Assert.All(MpiSelfCheck.Collectives(world), r => Assert.True(r.Passed, $"{r.Name}: {r.Detail}"));
        var (results, gradientDigest, parameterDigest) = MpiSelfCheck.Reduction(world, 12, seed: 1);
        Assert.All(results, r => Assert.True(r.Passed, $"{r.Name}: {r.Detail}"));
        var expected = SelfCheckDefinition.Digests(12, seed: 1);
        Assert.Equal(expected.Gradient, gradientDigest);
        Assert.Equal(expected.Parameters, parameterDigest);
    }

    [Fact]
    public void MicroBatchesThatDoNotSplitEvenlyOverTheRanksAreAUserError()
    {
        using var world = new SingleProcessCommunicator();
        var e = Assert.Throws<DeepSeekSharpException>(() => new GradientBucket(world, [new float[1]], 0));
        Assert.Contains("multiple of the rank count", e.Message);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(1, true)]
    [InlineData(3, true)]
    public void AOneProcessBucketNeedsNoExchangeAndItsNormBlocksAreThoseOfThePaddedSum(int microBatches, bool zero1)
    {
        // 2,500 gradient elements in three parameters: shards aligned to the norm's 1,024-element blocks pad it to 3,072.
        var leaves = PairwiseSumTreeTests.Leaves(microBatches, 2500, seed: 11);
        float[] a = new float[700], b = new float[1300], c = new float[500];
        using var world = new SingleProcessCommunicator();
        using var bucket = new GradientBucket(world, [a, b, c], microBatches, BlockSquares.Length);
        Assert.Equal(3 * BlockSquares.Length, bucket.Shards.ShardLength);
        for (int step = 0; step < 2; step++)
        {
            foreach (var leaf in leaves)
            {
                new FlatSegments([a, b, c]).CopyFrom(leaf, 0);   // the backward writes into zeroed buffers
                bucket.AddMicroBatch();
                // With one micro-batch per step its gradient is the sum already: the bucket leaves it where it is.
                if (microBatches == 1) Assert.Equal(leaf[0], a[0]);
                else Assert.All(a, x => Assert.Equal(0f, x));
            }
            bucket.StartReduction();
            // ZeRO-1 never gathers: the norm's blocks then come from the shard the optimizer reads.
            if (!zero1) bucket.WaitAll();
            var sum = new float[bucket.Shards.ShardLength];
            for (int i = 0; i < 2500; i++) sum[i] = PairwiseSumTreeTests.Definition(leaves, 0, microBatches, i);
            var flat = new float[2500];
            new FlatSegments([a, b, c]).CopyTo(0, flat);
            for (int i = 0; i < 2500; i++) Assert.Equal(BitConverter.SingleToInt32Bits(sum[i]), BitConverter.SingleToInt32Bits(flat[i]));
            var expected = new double[3];
            BlockSquares.Compute(sum, expected);
            var blocks = new double[3];
            bucket.ShardBlockSquares(blocks);
            if (zero1) Assert.Equal(sum, bucket.WaitShard().ToArray());
            Assert.Equal(expected, blocks);
            // ZeRO-1 asks for the shard itself: the whole padded sum.
            Assert.Equal(sum, bucket.WaitShard().ToArray());
            foreach (var buffer in new[] { a, b, c }) buffer.AsSpan().Clear();
        }
    }

    [Fact]
    public void OneProcessTrainingStateIsTheGradientsAndMomentsWithoutExchangeBuffers()
    {
        const long Trainable = 1_000_000;
        // One micro-batch: the gradients (4 bytes) and two fp32 moments (8 bytes) per element, nothing else.
        Assert.Equal(Trainable * 12, DeepSeekSharp.Training.DataParallel.TrainingStateBytes(Trainable, DeepSeekSharp.Optim.MomentPrecision.Fp32, 1, 1, 0));
        // Four micro-batches: the tree's ⌈log₂ 4⌉ + 1 = 3 partial sums as well.
        Assert.Equal(Trainable * (12 + 12), DeepSeekSharp.Training.DataParallel.TrainingStateBytes(Trainable, DeepSeekSharp.Optim.MomentPrecision.Fp32, 4, 1, 0));
        // Two ranks exchange: send, receive and gather buffers on top of the tree; ZeRO-1 halves the BF16 moments.
        Assert.Equal(Trainable * (4 + 4 * 2 + 12) + Trainable / 2 * 4,
            DeepSeekSharp.Training.DataParallel.TrainingStateBytes(Trainable, DeepSeekSharp.Optim.MomentPrecision.Bf16, 2, 2, 1));
    }
}
