using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>A frozen Linear whose weight stays compressed (BF16 / FP8 blocks): the input gradient, no weight gradient.</summary>
public class CompressedLinearTests
{
    [Theory]
    [InlineData(WeightStorage.Bf16)]
    [InlineData(WeightStorage.Fp8Block)]
    public void InputGradientEqualsTheFp32LinearsOnTheWidenedWeight(WeightStorage storage)
    {
        // 700 output rows: more than one widened strip in the backward, and a partial FP8 block at the edge.
        const int n = 37, inDim = 150, outDim = 700;
        var rng = new Random(4);
        var w = GradCheck.Random(rng, 0.2f, outDim, inDim);
        var compressed = CompressedWeight.Compress(w.Span, outDim, inDim, storage);
        var widened = new Tensor([outDim, inDim], compressed.Decompress());
        int[] targets = Enumerable.Range(0, n).Select(i => i * 13 % outDim).ToArray();

        float[] Grad(Func<Tensor, Tensor> linear, out float[] y)
        {
            var x = GradCheck.Random(new Random(5), 1f, n, inDim);
            x.RequiresGrad = true;
            // x feeds two ops, so the second gradient accumulates onto the first.
            var output = linear(x);
            var loss = Functional.CrossEntropy(Functional.Add(output, Functional.Linear(x, widened)), targets);
            Backprop.Backward(loss);
            y = output.Span.ToArray();
            return x.Grad!.AsSpan(0, n * inDim).ToArray();
        }
        float[] got = Grad(x => Functional.LinearCompressed(x, compressed), out var yGot);
        float[] want = Grad(x => Functional.Linear(x, widened), out var yWant);
        for (int i = 0; i < yWant.Length; i++) Assert.True(Math.Abs(yGot[i] - yWant[i]) <= 1e-4f * (1 + Math.Abs(yWant[i])), $"y[{i}]");
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(got[i] - want[i]) <= 1e-4f * (1 + Math.Abs(want[i])), $"dx[{i}]: {got[i]} vs {want[i]}");
    }

    [Fact]
    public void InputGradientMatchesFiniteDifferences()
    {
        var rng = new Random(6);
        var w = GradCheck.Random(rng, 0.3f, 20, 12);
        var compressed = CompressedWeight.Compress(w.Span, 20, 12, WeightStorage.Bf16);
        var x = GradCheck.Random(rng, 1f, 5, 12);
        x.RequiresGrad = true;
        GradCheck.Check(() => Functional.LinearCompressed(x, compressed), [x]);
    }
}
