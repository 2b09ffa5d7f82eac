using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>The single-precision vector exp against double-precision Math.Exp, over its whole finite range.</summary>
public class VectorExpTests
{
    [Fact]
    public void WithinTwoUlpOverTheFiniteRange()
    {
        // Every 331st float bit pattern from -87.3 up to ln(float.MaxValue), both signs (~13M inputs), plus the ends.
        var inputs = new List<float> { -87.3f, 88.72283f, 0f, -0f, 1e-30f, -1e-30f };
        for (uint bits = 0; bits < 0x7F800000u; bits += 331)
        {
            float v = BitConverter.UInt32BitsToSingle(bits);
            if (v <= 88.72283f) inputs.Add(v);
            if (v <= 87.3f) inputs.Add(-v);
        }
        float[] x = inputs.ToArray(), y = new float[x.Length];
        VectorExp.Exp(x, y);
        long worst = 0;
        float worstAt = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float expected = (float)Math.Exp(x[i]);
            long ulps = Math.Abs((long)BitConverter.SingleToInt32Bits(expected) - BitConverter.SingleToInt32Bits(y[i]));
            if (ulps > worst) (worst, worstAt) = (ulps, x[i]);
        }
        Assert.True(worst <= 2, $"{worst} ulp at x = {worstAt:R}");
    }

    [Fact]
    public void OutOfRangeAndSpecialInputs()
    {
        float[] x = [88.8f, 1000f, float.PositiveInfinity, -87.4f, -1000f, float.NegativeInfinity, float.NaN, 0f, 1f, -1f, 88.7f];
        var y = new float[x.Length];
        VectorExp.Exp(x, y); // 11 inputs: the tail path
        Assert.Equal([float.PositiveInfinity, float.PositiveInfinity, float.PositiveInfinity, 0f, 0f, 0f], y[..6]);
        Assert.True(float.IsNaN(y[6]));
        Assert.Equal(1f, y[7]);
        Assert.Equal((float)Math.E, y[8], 6);
        Assert.Equal((float)(1 / Math.E), y[9], 6);
        Assert.True(float.IsFinite(y[10]) && Math.Abs(y[10] / Math.Exp(x[10]) - 1) < 1e-6, $"exp(88.7) = {y[10]}");
    }

    [Theory]
    [InlineData(16)]
    [InlineData(37)]
    [InlineData(255)]
    public void InPlaceEqualsOutOfPlaceForAnyLength(int n)
    {
        var rng = new Random(n);
        float[] x = Enumerable.Range(0, n).Select(_ => (rng.NextSingle() - 0.8f) * 30f).ToArray();
        float[] expected = new float[n], inPlace = (float[])x.Clone();
        VectorExp.Exp(x, expected);
        VectorExp.Exp(inPlace, inPlace); // the overlapping last vector must come from the inputs, not from stored results
        Assert.Equal(expected, inPlace);
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(expected[i] / Math.Exp(x[i]) - 1) < 3e-7, $"[{i}] exp({x[i]}) = {expected[i]}");
    }
}
