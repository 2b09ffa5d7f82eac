using System.Security.Cryptography;
using System.Runtime.InteropServices;

namespace DeepSeekSharp.Distributed;

/// <summary>One check of <see cref="MpiSelfCheck"/>: its name, whether this rank saw the defined result, and what differed.</summary>
public sealed record SelfCheckResult(string Name, bool Passed, string Detail = "");

/// <summary>
/// What <c>dss mpi check</c> runs on every rank: each collective against its definition (inputs are functions of the
/// rank, so every rank knows what everyone sent), the deterministic gradient sum against the single-process tree, and
/// a ZeRO-1 update against the same update done whole. The sums use values of very different magnitudes, so any
/// other summation order shows up in the bits.
/// </summary>
public static class MpiSelfCheck
{
    /// <summary>The parameter lengths of the gradient check (two buckets: the first three, the last two).</summary>
    public static readonly int[] ParameterSizes = [1000, 7, 1, 333, 4096];

    /// <summary>Micro-batch g's gradient at flat element i (over all of <see cref="ParameterSizes"/>): sign, 24-bit mantissa and an exponent in [−20, 20] from a hash.</summary>
    public static float LeafValue(int seed, int microBatch, int element)
    {
        ulong z = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (ulong)(uint)microBatch << 32 ^ (uint)element;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        float mantissa = 1f + (z & 0x7FFFFF) / (float)(1 << 23);
        int exponent = (int)((z >> 23) % 41) - 20;
        float value = MathF.ScaleB(mantissa, exponent);
        return (z >> 63) != 0 ? -value : value;
    }

    /// <summary>Every collective of <see cref="ICommunicator"/> against its definition.</summary>
    public static List<SelfCheckResult> Collectives(ICommunicator comm)
    {
        int r = comm.Rank, n = comm.Size;
        var results = new List<SelfCheckResult>();
        void Expect(string name, bool passed, string detail) => results.Add(new SelfCheckResult(name, passed, passed ? "" : detail));

        comm.Barrier();
        Expect("barrier", true, "");

        var bcast = new double[5];
        int root = n - 1;
        for (int i = 0; i < bcast.Length; i++) bcast[i] = r == root ? root * 10 + i + 0.5 : -1;
        comm.Broadcast<double>(bcast, root);
        Expect("broadcast (double, root = last rank)", Matches(bcast, i => root * 10 + i + 0.5, out string d), d);

        var send = new float[6];
        var receive = new float[6];
        for (int i = 0; i < send.Length; i++) send[i] = r * 100 + i;
        comm.AllReduce<float>(send, receive, ReduceOp.Sum);
        Expect("allreduce sum (float)", Matches(receive, i => 100f * n * (n - 1) / 2 + n * i, out d), d);
        comm.AllReduce<float>(send, receive, ReduceOp.Max);
        Expect("allreduce max (float)", Matches(receive, i => (n - 1) * 100 + i, out d), d);
        comm.AllReduce<float>(send, receive, ReduceOp.Min);
        Expect("allreduce min (float)", Matches(receive, i => i, out d), d);
        var inPlace = new int[4];
        for (int i = 0; i < inPlace.Length; i++) inPlace[i] = r + i;
        comm.AllReduce<int>(inPlace, ReduceOp.Sum);
        Expect("allreduce sum in place (int)", Matches(inPlace, i => n * (n - 1) / 2 + n * i, out d), d);
        var big = new long[3];
        for (int i = 0; i < big.Length; i++) big[i] = ((long)r << 33) + i;
        comm.AllReduce<long>(big, ReduceOp.Sum);
        Expect("allreduce sum in place (long, beyond 32 bits)", Matches(big, i => ((long)n * (n - 1) / 2 << 33) + (long)n * i, out d), d);

        const int Block = 3;
        var scatterSend = new float[n * Block];
        var scatterReceive = new float[Block];
        for (int dst = 0; dst < n; dst++)
            for (int j = 0; j < Block; j++) scatterSend[dst * Block + j] = r * 1000 + dst * 10 + j;
        comm.ReduceScatter<float>(scatterSend, scatterReceive, ReduceOp.Sum);
        Expect("reduce-scatter sum (float)", Matches(scatterReceive, j => 1000f * n * (n - 1) / 2 + n * (r * 10 + j), out d), d);

        var gatherSend = new ushort[Block];
        var gatherReceive = new ushort[n * Block];
        for (int j = 0; j < Block; j++) gatherSend[j] = (ushort)(r * 10 + j);
        comm.AllGather<ushort>(gatherSend, gatherReceive);
        Expect("allgather (ushort)", Matches(gatherReceive, i => (ushort)(i / Block * 10 + i % Block), out d), d);

        var a2aSend = new float[n * Block];
        var a2aReceive = new float[n * Block];
        for (int dst = 0; dst < n; dst++)
            for (int j = 0; j < Block; j++) a2aSend[dst * Block + j] = r * 100 + dst * 10 + j;
        comm.AllToAll<float>(a2aSend, a2aReceive);
        Expect("alltoall (float)", Matches(a2aReceive, i => i / Block * 100 + r * 10 + i % Block, out d), d);

        // Rank s sends s + dst + 1 bytes to dst, valued s·50 + dst·10 + j (mod 256).
        var (vSend, sc, so, vReceive, rc, ro) = AllToAllVBuffers(r, n);
        comm.AllToAllV<byte>(vSend, sc, so, vReceive, rc, ro);
        Expect("alltoallv (byte, uneven counts)", AllToAllVMatches(vReceive, rc, ro, r, out d), d);

        using (var sub = comm.Split(r % 2, n - r))
        {
            int members = (n - r % 2 + 1) / 2, expectedRank = 0, sum = 0;
            for (int s = r % 2; s < n; s += 2)
            {
                sum += s;
                if (s > r) expectedRank++;
            }
            var subSum = new int[] { r };
            sub.AllReduce<int>(subSum, ReduceOp.Sum);
            bool ok = sub.Size == members && sub.Rank == expectedRank && subSum[0] == sum;
            Expect("split by colour (rank parity, reversed key) + allreduce in the sub-group", ok,
                $"size {sub.Size} (expected {members}), rank {sub.Rank} (expected {expectedRank}), sum {subSum[0]} (expected {sum})");
        }

        using (var reduceRequest = new CollectiveRequest())
        using (var gatherRequest = new CollectiveRequest())
        using (var vRequest = new CollectiveRequest())
        {
            var reduceBuffer = new double[4];
            for (int i = 0; i < reduceBuffer.Length; i++) reduceBuffer[i] = r * 0.5 + i;
            var gathered = new float[n * Block];
            var gatherSource = new float[Block];
            for (int j = 0; j < Block; j++) gatherSource[j] = r * 10 + j;
            var (nvSend, nsc, nso, nvReceive, nrc, nro) = AllToAllVBuffers(r, n);
            comm.StartAllReduce<double>(reduceBuffer, ReduceOp.Sum, reduceRequest);
            comm.StartAllGather<float>(gatherSource, gathered, gatherRequest);
            comm.StartAllToAllV<byte>(nvSend, nsc, nso, nvReceive, nrc, nro, vRequest);
            while (!vRequest.Test()) Thread.Yield();
            gatherRequest.Wait();
            reduceRequest.Wait();
            bool ok = Matches(reduceBuffer, i => 0.5 * n * (n - 1) / 2 + n * i, out string d1)
                & Matches(gathered, i => i / Block * 10 + i % Block, out string d2)
                & AllToAllVMatches(nvReceive, nrc, nro, r, out string d3);
            Expect("non-blocking allreduce + allgather + alltoallv in flight together", ok, string.Join(" ", d1, d2, d3).Trim());
        }

        // Open MPI installs signal handlers at init; .NET turns SIGSEGV into NullReferenceException and must still own it.
        try
        {
            object? nothing = r < 0 ? new object() : null;
            _ = nothing!.GetHashCode();
            Expect("managed exceptions after MPI_Init", false, "no NullReferenceException");
        }
        catch (NullReferenceException)
        {
            Expect("managed exceptions after MPI_Init", true, "");
        }
        return results;
    }

    /// <summary>
    /// The deterministic gradient sum (<see cref="GradientBucket"/>, two buckets reduced concurrently) against the
    /// single-process tree over all micro-batches, which every rank computes locally; and ZeRO-1 (reduce-scatter, an
    /// SGD step on this rank's shard, <see cref="ShardedParameters.AllGather"/>) against the same step done whole.
    /// Returns SHA-256 digests of the summed gradient and the updated parameters, equal for every world size.
    /// </summary>
    public static (List<SelfCheckResult> Results, string GradientDigest, string ParameterDigest) Reduction(ICommunicator comm, int microBatches, int seed)
    {
        const float LearningRate = 0.001f;
        int total = ParameterSizes.Sum();
        var results = new List<SelfCheckResult>();

        var reference = new float[total];
        var leaves = new List<float[]>();
        for (int g = 0; g < microBatches; g++)
        {
            var leaf = new float[total];
            for (int i = 0; i < total; i++) leaf[i] = LeafValue(seed, g, i);
            leaves.Add(leaf);
        }
        PairwiseSumTree.Sum(leaves, reference);

        var gradients = ParameterSizes.Select(size => new float[size]).ToArray();
        var parameters = ParameterSizes.Select(size => new float[size]).ToArray();
        int[] starts = new int[ParameterSizes.Length];
        for (int p = 1; p < starts.Length; p++) starts[p] = starts[p - 1] + ParameterSizes[p - 1];
        for (int p = 0; p < parameters.Length; p++)
            for (int i = 0; i < parameters[p].Length; i++) parameters[p][i] = LeafValue(seed + 1, 0, starts[p] + i);
        var initialParameters = parameters.SelectMany(x => x).ToArray();

        Memory<float>[] Of(float[][] arrays, int from, int to) => [.. arrays[from..to].Select(a => (Memory<float>)a)];
        using var first = new GradientBucket(comm, Of(gradients, 0, 3), microBatches);
        using var second = new GradientBucket(comm, Of(gradients, 3, 5), microBatches);
        var (firstBatch, count) = first.MicroBatches;
        for (int g = firstBatch; g < firstBatch + count; g++)
        {
            // What a backward would leave in the parameters' gradient buffers for micro-batch g.
            for (int p = 0; p < gradients.Length; p++)
                for (int i = 0; i < gradients[p].Length; i++) gradients[p][i] += LeafValue(seed, g, starts[p] + i);
            first.AddMicroBatch();
            if (g == firstBatch + count - 1) first.StartReduction(); // the first bucket travels while the "backward" goes on
            second.AddMicroBatch();
        }
        second.StartReduction();
        second.WaitAll();
        first.WaitAll();
        var summed = gradients.SelectMany(x => x).ToArray();
        results.Add(new SelfCheckResult($"gradient sum of {microBatches} micro-batches, bit-identical to the single-process tree",
            FirstDifference(summed, reference, out string d), d));

        // ZeRO-1 on the second bucket's parameters: the optimizer state of an element lives on one rank only.
        var zeroGradients = Of(gradients, 3, 5).Select(m => new float[m.Length]).ToArray();
        using var zeroBucket = new GradientBucket(comm, [.. zeroGradients.Select(a => (Memory<float>)a)], microBatches);
        var sharded = new ShardedParameters(comm, Of(parameters, 3, 5));
        for (int g = firstBatch; g < firstBatch + count; g++)
        {
            for (int p = 0; p < zeroGradients.Length; p++)
                for (int i = 0; i < zeroGradients[p].Length; i++) zeroGradients[p][i] = LeafValue(seed, g, starts[3 + p] + i);
            zeroBucket.AddMicroBatch();
        }
        zeroBucket.StartReduction();
        ReadOnlySpan<float> shard = zeroBucket.WaitShard();
        bool sameLayout = zeroBucket.Shards == sharded.Shards;
        foreach (var (segment, offset, n, flat) in sharded.OwnPieces())
        {
            Span<float> values = sharded.Parameters[segment].Span.Slice(offset, n);
            for (int i = 0; i < n; i++) values[i] -= LearningRate * shard[flat - sharded.OwnShard.Start + i];
        }
        sharded.AllGather();
        var updated = parameters.Skip(3).SelectMany(x => x).ToArray();
        var expected = new float[updated.Length];
        for (int i = 0; i < expected.Length; i++)
            expected[i] = initialParameters[starts[3] + i] - LearningRate * reference[starts[3] + i];
        results.Add(new SelfCheckResult("ZeRO-1: shard of the sum, update, allgather of the parameters = the update done whole",
            sameLayout && FirstDifference(updated, expected, out d), sameLayout ? d : "gradient and parameter shards differ"));
        return (results, Digest(summed), Digest(updated));
    }

    /// <summary>SHA-256 of the floats' bits, lower-case hex.</summary>
    public static string Digest(ReadOnlySpan<float> values) => Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(values)));

    private static (byte[] Send, int[] SendCounts, int[] SendOffsets, byte[] Receive, int[] ReceiveCounts, int[] ReceiveOffsets) AllToAllVBuffers(int r, int n)
    {
        int[] sc = new int[n], so = new int[n], rc = new int[n], ro = new int[n];
        int sent = 0, received = 0;
        for (int x = 0; x < n; x++)
        {
            (sc[x], so[x]) = (r + x + 1, sent);
            (rc[x], ro[x]) = (x + r + 1, received);
            sent += sc[x];
            received += rc[x];
        }
        var send = new byte[sent];
        for (int dst = 0; dst < n; dst++)
            for (int j = 0; j < sc[dst]; j++) send[so[dst] + j] = (byte)(r * 50 + dst * 10 + j);
        return (send, sc, so, new byte[received], rc, ro);
    }

    private static bool AllToAllVMatches(byte[] receive, int[] counts, int[] offsets, int r, out string detail)
    {
        for (int s = 0; s < counts.Length; s++)
            for (int j = 0; j < counts[s]; j++)
                if (receive[offsets[s] + j] != (byte)(s * 50 + r * 10 + j))
                {
                    detail = $"from rank {s} element {j}: {receive[offsets[s] + j]}, expected {(byte)(s * 50 + r * 10 + j)}";
                    return false;
                }
        detail = "";
        return true;
    }

    private static bool Matches<T>(T[] actual, Func<int, T> expected, out string detail) where T : IEquatable<T>
    {
        for (int i = 0; i < actual.Length; i++)
            if (!actual[i].Equals(expected(i)))
            {
                detail = $"element {i}: {actual[i]}, expected {expected(i)}";
                return false;
            }
        detail = "";
        return true;
    }

    private static bool FirstDifference(float[] actual, float[] expected, out string detail)
    {
        for (int i = 0; i < actual.Length; i++)
            if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(expected[i]))
            {
                detail = $"element {i}: {actual[i]:R} (0x{BitConverter.SingleToInt32Bits(actual[i]):X8}), expected {expected[i]:R} (0x{BitConverter.SingleToInt32Bits(expected[i]):X8})";
                return false;
            }
        detail = "";
        return true;
    }
}
