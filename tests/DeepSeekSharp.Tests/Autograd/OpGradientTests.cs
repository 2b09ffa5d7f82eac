using DeepSeekSharp.Autograd;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>Finite-difference checks of every op's backward.</summary>
public class OpGradientTests
{
    private static readonly Random Rng = new(42);

    [Fact]
    public void Linear() 
    {
        var x = GradCheck.Random(Rng, 1, 5, 7); var w = GradCheck.Random(Rng, 1, 3, 7);
        GradCheck.Check(() => Functional.Linear(x, w), [x, w]);
    }

    [Fact]
    public void RmsNorm()
    {
        var x = GradCheck.Random(Rng, 1, 4, 16); var w = GradCheck.Random(Rng, 1, 16);
        GradCheck.Check(() => Functional.RmsNorm(x, w, 1e-6f), [x, w]);
    }

    [Fact]
    public void SiluMulAndAdd()
    {
        var a = GradCheck.Random(Rng, 2, 3, 9); var b = GradCheck.Random(Rng, 2, 3, 9);
        GradCheck.Check(() => Functional.Add(Functional.SiluMul(a, b), a), [a, b]);
    }

    [Fact]
    public void SigmoidAndSoftmax()
    {
        var a = GradCheck.Random(Rng, 2, 3, 6);
        GradCheck.Check(() => Functional.Sigmoid(a), [a]);
        GradCheck.Check(() => Functional.Softmax(a), [a]);
    }

    [Fact]
    public void SliceConcatReshapeGather()
    {
        var a = GradCheck.Random(Rng, 1, 4, 6); var b = GradCheck.Random(Rng, 1, 4, 2);
        GradCheck.Check(() => Functional.GatherRows(Functional.Reshape(Functional.ConcatLast(Functional.SliceLast(a, 1, 3), b), 4, 5), [3, 0, 3, 2]), [a, b]);
    }

    [Fact]
    public void Embedding()
    {
        var w = GradCheck.Random(Rng, 1, 10, 4);
        GradCheck.Check(() => Functional.Embedding(w, [1, 7, 1, 9]), [w]);
    }

    [Fact]
    public void Rope()
    {
        int rows = 5, heads = 2, stride = 6, offset = 2, dr = 4;
        var x = GradCheck.Random(Rng, 1, rows, heads * stride);
        var cos = new float[8 * dr / 2]; var sin = new float[8 * dr / 2];
        for (int p = 0; p < 8; p++) for (int i = 0; i < dr / 2; i++) { cos[p * 2 + i] = MathF.Cos(p * (i + 1) * 0.3f); sin[p * 2 + i] = MathF.Sin(p * (i + 1) * 0.3f); }
        GradCheck.Check(() => Functional.Rope(x, heads, stride, offset, dr, [0, 1, 2, 7, 3], cos, sin), [x]);
    }

    [Theory]
    [InlineData(1, 5)]
    [InlineData(2, 70)] // longer than one 64-row tile
    public void MlaAttention(int batch, int seq)
    {
        var s = new MlaAttentionShape(batch, seq, 2, 3, 2, 4, 0.4f);
        var q = GradCheck.Random(Rng, 1, batch * seq, s.Heads * s.QDim);
        var kvb = GradCheck.Random(Rng, 1, batch * seq, s.Heads * s.KvbDim);
        var kpe = GradCheck.Random(Rng, 1, batch * seq, s.RopeDim);
        GradCheck.Check(() => Functional.MlaAttention(q, kvb, kpe, s), [q, kvb, kpe]);
    }

    [Fact]
    public void CrossEntropyAndWeightedSum()
    {
        var z = GradCheck.Random(Rng, 2, 4, 7); var z2 = GradCheck.Random(Rng, 2, 3, 7);
        GradCheck.Check(() => Functional.WeightedSum([Functional.CrossEntropy(z, [1, -1, 6, 0]), Functional.CrossEntropy(z2, [2, 2, -1])], [1f, 0.3f]), [z, z2]);
    }

    [Theory]
    [InlineData(5, 6)]  // hidden > rows: log-sum-exp kept, logits recomputed in the backward
    [InlineData(7, 4)]  // hidden ≤ rows: gradients formed in the forward
    public void LinearCrossEntropyFiniteDifferences(int rows, int hidden)
    {
        var h = GradCheck.Random(Rng, 1, rows, hidden); var w = GradCheck.Random(Rng, 1, 9, hidden);
        var targets = Enumerable.Range(0, rows).Select(i => i == 1 ? -1 : (i * 5) % 9).ToArray();
        GradCheck.Check(() => Functional.WeightedSum([Functional.LinearCrossEntropy(h, w, targets)], [0.7f]), [h, w]);
    }

    [Theory]
    [InlineData(40_000, 8, 64)]   // gradients formed in the forward, blocks of 64, 64, 22 rows
    [InlineData(20_000, 160, 104)] // recomputed in the backward, blocks of 104, 46 rows
    public void LinearCrossEntropyOverSeveralBlocksEqualsTheMaterialisedLogits(int v, int hidden, int blockRows)
    {
        const int rows = 150;
        Assert.Equal(blockRows, DeepSeekSharp.Autograd.Ops.LinearCrossEntropyOp.BlockRows(v));
        Assert.Equal(hidden <= rows, DeepSeekSharp.Autograd.Ops.LinearCrossEntropyOp.FormsGradientsInForward(rows, hidden));
        var h = GradCheck.Random(Rng, 1, rows, hidden); var w = GradCheck.Random(Rng, 0.3f, v, hidden);
        var targets = Enumerable.Range(0, rows).Select(i => i % 7 == 3 ? -1 : Rng.Next(v)).ToArray();
        var fused = Functional.LinearCrossEntropy(h, w, targets);
        Backprop.Backward(Functional.WeightedSum([fused], [1.3f]));
        var (gh, gw) = ((float[])h.Grad!.Clone(), (float[])w.Grad!.Clone());
        h.Grad = null; w.Grad = null;
        var plain = Functional.CrossEntropy(Functional.Linear(h, w), targets);
        Backprop.Backward(Functional.WeightedSum([plain], [1.3f]));
        Assert.Equal(plain.Data[0], fused.Data[0], 4);
        // Intermediate gradients come from the pool and may be longer than the tensor (the slack is not compared).
        float gMax = h.Grad!.AsSpan(0, (int)h.Length).ToArray().Max(Math.Abs), wMax = w.Grad!.AsSpan(0, (int)w.Length).ToArray().Max(Math.Abs);
        for (int i = 0; i < h.Length; i++) Assert.True(Math.Abs(gh[i] - h.Grad![i]) <= 1e-4 * gMax, $"dh[{i}] {gh[i]} vs {h.Grad[i]}");
        for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(gw[i] - w.Grad![i]) <= 1e-4 * wMax, $"dW[{i}] {gw[i]} vs {w.Grad[i]}");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void RouteWeightsAndCombine(bool normalize)
    {
        var scores = GradCheck.Random(Rng, 1, 3, 4);
        for (int i = 0; i < scores.Length; i++) scores.Data[i] = Math.Abs(scores.Data[i]) + 0.1f;
        // Five stacked expert-output rows: tokens 0 and 2 (expert 0), then 0, 1, 2 (expert 2).
        var stacked = GradCheck.Random(Rng, 1, 5, 5);
        int[] idx = [0, 2, 2, 1, 0, 2];
        GradCheck.Check(() =>
        {
            var w = Functional.RouteWeights(scores, idx, 2, normalize, 2.5f);
            return Functional.MoeCombine(w, stacked, [0, 2, 0, 1, 2], [0, 1, 1, 0, 1]);
        }, [scores, stacked]);
    }

    /// <summary>
    /// Linear, RoPE, SwiGLU and the MoE combine store their input gradient when the input has none yet and accumulate it when
    /// another op's gradient is already there: each input here is read by two ops, so one backward takes each path.
    /// </summary>
    [Fact]
    public void OpsOverwritingAFreshGradientAccumulateIntoAnExistingOne()
    {
        var x = GradCheck.Random(Rng, 1, 5, 12);
        var w1 = GradCheck.Random(Rng, 0.5f, 12, 12);
        var w2 = GradCheck.Random(Rng, 0.5f, 12, 12);
        GradCheck.Check(() => Functional.Add(Functional.Linear(x, w1), Functional.Linear(x, w2)), [x, w1, w2]);

        var cos = new float[8 * 2]; var sin = new float[8 * 2];
        for (int p = 0; p < 8; p++) for (int i = 0; i < 2; i++) { cos[p * 2 + i] = MathF.Cos(p * (i + 1) * 0.3f); sin[p * 2 + i] = MathF.Sin(p * (i + 1) * 0.3f); }
        GradCheck.Check(() => Functional.Add(Functional.Rope(x, 2, 6, 2, 4, [0, 1, 2, 7, 3], cos, sin), Functional.Linear(x, w1)), [x]);
        GradCheck.Check(() => Functional.Add(Functional.Linear(x, w1), Functional.Rope(x, 2, 6, 2, 4, [0, 1, 2, 7, 3], cos, sin)), [x]);

        // SwiGLU: both inputs fresh (stored), then one of them also read by a Linear (accumulated, either order).
        var u = GradCheck.Random(Rng, 1, 5, 12);
        GradCheck.Check(() => Functional.SiluMul(Functional.Linear(x, w1), Functional.Linear(u, w2)), [x, u, w1, w2]);
        GradCheck.Check(() => Functional.Add(Functional.SiluMul(x, u), Functional.Linear(x, w1)), [x, u]);
        GradCheck.Check(() => Functional.Add(Functional.Linear(x, w1), Functional.SiluMul(x, u)), [x, u]);

        var weights = GradCheck.Random(Rng, 1, 3, 2);
        var stacked = GradCheck.Random(Rng, 1, 5, 12);
        var w3 = GradCheck.Random(Rng, 0.5f, 12, 12);
        Tensor Combine() => Functional.MoeCombine(weights, stacked, [0, 2, 0, 1, 2], [0, 1, 1, 0, 1]);
        Tensor Projected() => Functional.GatherRows(Functional.Linear(stacked, w3), [0, 1, 2]);
        GradCheck.Check(() => Functional.Add(Combine(), Projected()), [weights, stacked, w3]);
        GradCheck.Check(() => Functional.Add(Projected(), Combine()), [weights, stacked, w3]);
    }
}

public class BalanceLossGradientTests
{
    [Theory]
    [InlineData(3)] // sequence-wise: 2 groups of 3 rows
    [InlineData(6)] // whole batch
    public void BalanceLoss(int groupRows)
    {
        var rng = new Random(5);
        var scores = GradCheck.Random(rng, 1, 6, 4);
        for (int i = 0; i < scores.Length; i++) scores.Data[i] = Math.Abs(scores.Data[i]) + 0.1f;
        int[] idx = [0, 1, 2, 3, 1, 2, 0, 3, 3, 1, 2, 0];
        GradCheck.Check(() => DeepSeekSharp.Autograd.Functional.BalanceLoss(scores, idx, 2, groupRows, 0.5f), [scores]);
    }
}
