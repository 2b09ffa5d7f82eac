using System.Runtime.InteropServices;
using System.Security.Cryptography;
using DeepSeekSharp.Distributed;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>
/// What <c>dss mpi check</c> must print, computed here from the definitions (the tree written recursively, the SGD step
/// on the whole vector), never by the reducer under test: its inputs come from <see cref="MpiSelfCheck.LeafValue"/>.
/// </summary>
internal static class SelfCheckDefinition
{
    public static (string Gradient, string Parameters) Digests(int microBatches, int seed)
    {
        int total = MpiSelfCheck.ParameterSizes.Sum();
        var leaves = new List<float[]>();
        for (int g = 0; g < microBatches; g++)
        {
            var leaf = new float[total];
            for (int i = 0; i < total; i++) leaf[i] = MpiSelfCheck.LeafValue(seed, g, i);
            leaves.Add(leaf);
        }
        var sum = new float[total];
        for (int i = 0; i < total; i++) sum[i] = PairwiseSumTreeTests.Definition(leaves, 0, microBatches, i);

        // The ZeRO-1 check updates the last two parameters: p − 0.001·g, starting from LeafValue(seed + 1, 0, i).
        int first = MpiSelfCheck.ParameterSizes[..3].Sum();
        var updated = new float[total - first];
        for (int i = 0; i < updated.Length; i++)
            updated[i] = MpiSelfCheck.LeafValue(seed + 1, 0, first + i) - 0.001f * sum[first + i];
        return (Sha256(sum), Sha256(updated));
    }

    private static string Sha256(float[] values) => Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(values.AsSpan())));
}
