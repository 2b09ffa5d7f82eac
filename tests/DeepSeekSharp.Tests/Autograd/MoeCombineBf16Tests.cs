using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>
/// The MoE combine with its expert outputs cached in BF16 (DeepSeek-V3's FP8 recipe): the forward and the outputs'
/// gradient are the fp32 combine's bit for bit, the routing weights' gradient is the fp32 formula on the BF16-rounded
/// outputs, and neither input's fp32 values are read after the forward.
/// </summary>
public class MoeCombineBf16Tests
{
    private const int Tokens = 5, K = 3, Hidden = 40;
    // Stacked rows grouped by expert: (token, slot) of each row.
    private static readonly int[] RowToken = [0, 2, 4, 1, 0, 3, 2, 4, 1, 3, 0, 1, 2, 3, 4];
    private static readonly int[] RowSlot = [0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2];

    private static (Tensor Weights, Tensor Stacked, float[] Dy) Inputs()
    {
        var rng = new Random(3);
        var weights = GradCheck.Random(rng, 1, Tokens, K);
        var stacked = GradCheck.Random(rng, 1, RowToken.Length, Hidden);
        var dy = new float[Tokens * Hidden];
        for (int i = 0; i < dy.Length; i++) dy[i] = (float)(rng.NextDouble() * 2 - 1);
        return (weights, stacked, dy);
    }

    [Fact]
    public void Bf16CacheKeepsTheForwardAndRoundsOnlyWhatTheWeightGradientReads()
    {
        var fp32 = Inputs();
        var y32 = Functional.MoeCombine(fp32.Weights, fp32.Stacked, RowToken, RowSlot);
        Assert.False(fp32.Stacked.ReleaseIfUnread()); // the fp32 combine reads its inputs in the backward
        Backprop.Backward(Functional.Dot(y32, fp32.Dy));

        var bf16 = Inputs();
        float[] stackedValues = bf16.Stacked.Span.ToArray();
        var y = Functional.MoeCombine(bf16.Weights, bf16.Stacked, RowToken, RowSlot, bf16Cache: true);
        // Neither input's values are read again: both may go before the backward.
        Assert.True(bf16.Stacked.ReleaseIfUnread());
        Assert.True(bf16.Weights.ReleaseIfUnread());
        Backprop.Backward(Functional.Dot(y, bf16.Dy));

        Assert.Equal(y32.Span.ToArray(), y.Span.ToArray());
        Assert.Equal(GradOf(fp32.Stacked), GradOf(bf16.Stacked));
        // dw[t, j] = BF16(E_j(x_t)) · dy[t], rows in order.
        var rounded = new float[stackedValues.Length];
        NumericFormats.RoundToBf16(stackedValues, rounded);
        var expected = new float[Tokens * K];
        for (int r = 0; r < RowToken.Length; r++)
            expected[RowToken[r] * K + RowSlot[r]] += TensorPrimitives.Dot(rounded.AsSpan(r * Hidden, Hidden), bf16.Dy.AsSpan(RowToken[r] * Hidden, Hidden));
        Assert.Equal(expected, GradOf(bf16.Weights));
        Assert.NotEqual(GradOf(fp32.Weights), GradOf(bf16.Weights)); // the rounding is visible: the test is not vacuous
    }

    // Gradient buffers of non-parameters come from the pool and may be longer than the tensor.
    private static float[] GradOf(Tensor t) => t.Grad!.AsSpan(0, (int)t.Length).ToArray();
}
