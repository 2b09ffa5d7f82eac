using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>The backend's softmax cross-entropy sweeps against a direct double-precision evaluation.</summary>
public sealed class CrossEntropyKernelTests : IDisposable
{
    private readonly CpuBackend _two = new(2);

    public void Dispose() => _two.Pool.Dispose();

    [Theory]
    [InlineData(37)]   // a 16-lane body and a 5-element tail
    [InlineData(1000)] // several 512-element partial sums
    public void ForwardBackwardInOneSweepMatchesDoublePrecision(int v)
    {
        const int rows = 19;
        const float scale = 0.25f;
        var rng = new Random(v);
        float[] logits = new float[rows * v];
        for (int i = 0; i < logits.Length; i++) logits[i] = (rng.NextSingle() - 0.5f) * 20f;
        int[] targets = Enumerable.Range(0, rows).Select(r => r % 5 == 3 ? -1 : rng.Next(v)).ToArray();
        float[] lse = new float[rows], dlogits = Enumerable.Repeat(float.NaN, rows * v).ToArray(); // overwritten, never read
        double loss = _two.CrossEntropyForwardBackward(logits, targets, v, lse, scale, dlogits);

        double expectedLoss = 0;
        for (int r = 0; r < rows; r++)
        {
            var z = logits.AsSpan(r * v, v);
            double max = z.ToArray().Max(), sum = 0;
            foreach (float x in z) sum += Math.Exp(x - max);
            double l = max + Math.Log(sum);
            Assert.True(Math.Abs(lse[r] - l) <= 1e-5 * Math.Max(1, Math.Abs(l)), $"row {r} lse {lse[r]} vs {l}");
            if (targets[r] >= 0) expectedLoss += l - z[targets[r]];
            for (int j = 0; j < v; j++)
            {
                double g = targets[r] < 0 ? 0 : scale * (Math.Exp(z[j] - l) - (j == targets[r] ? 1 : 0));
                Assert.True(Math.Abs(dlogits[r * v + j] - g) <= 2e-6, $"row {r} col {j}: {dlogits[r * v + j]} vs {g}");
            }
        }
        Assert.True(Math.Abs(loss - expectedLoss) <= 1e-5 * Math.Abs(expectedLoss), $"loss {loss} vs {expectedLoss}");

        // The separate forward and backward sweeps agree with the fused one.
        float[] lse2 = new float[rows], d2 = new float[rows * v];
        double loss2 = _two.CrossEntropyForward(logits, targets, v, lse2);
        _two.CrossEntropyBackward(logits, targets, v, lse2, scale, d2);
        Assert.True(Math.Abs(loss - loss2) <= 1e-9 * Math.Abs(loss), $"fused loss {loss} vs separate {loss2}");
        for (int i = 0; i < d2.Length; i++) Assert.True(Math.Abs(d2[i] - dlogits[i]) <= 2e-6, $"[{i}] {d2[i]} vs {dlogits[i]}");
    }
}
