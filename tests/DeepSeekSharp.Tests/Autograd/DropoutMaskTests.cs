using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>
/// <see cref="DropoutMask"/> and <see cref="Functional.Dropout"/>: the fraction dropped is p, kept values are scaled by
/// 1/(1 − p), the mask is a function of (key, index) alone, and the backward matches finite differences.
/// </summary>
public class DropoutMaskTests
{
    [Theory]
    [InlineData(0.05f)]
    [InlineData(0.3f)]
    [InlineData(0.5f)]
    public void DropsAFractionPAndScalesTheRestByOneOverOneMinusP(float p)
    {
        const int n = 200_003;                                                  // odd: the scalar tail runs too
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = 1f + i % 7;
        var y = new float[n];
        var mask = DropoutMask.For(p, seed: 42, step: 3, microBatch: 1, "model.layers.0.self_attn.o_proj");
        mask.Apply(x, 0, y);
        int dropped = 0;
        for (int i = 0; i < n; i++)
        {
            if (y[i] == 0) dropped++;
            else Assert.True(Math.Abs(x[i] / (1 - p) - y[i]) <= x[i] * 1e-6f, $"[{i}] {y[i]}");
            Assert.Equal(mask.Keeps(i), y[i] != 0);                           // the vector and scalar forms agree
        }
        // Binomial: 5 standard deviations of the dropped fraction.
        double sd = Math.Sqrt(p * (1 - p) / n);
        Assert.InRange((double)dropped / n, p - 5 * sd, p + 5 * sd);
        // Inverted dropout keeps the mean: E[y] = E[x].
        Assert.InRange(y.Average() / x.Average(), 1 - 10 * sd, 1 + 10 * sd);
    }

    [Fact]
    public void TheMaskIsAFunctionOfItsKeyAndTheIndexAlone()
    {
        var x = Enumerable.Range(0, 1000).Select(i => 1f + i).ToArray();
        float[] Run(DropoutMask m, long first = 0, int length = 1000)
        {
            var y = new float[length];
            m.Apply(x.AsSpan(0, length), first, y);
            return y;
        }
        var a = DropoutMask.For(0.5f, 1, 10, 0, "layer");
        Assert.Equal(Run(a), Run(DropoutMask.For(0.5f, 1, 10, 0, "layer")));     // same key: same mask, no state
        foreach (var other in new[] { DropoutMask.For(0.5f, 2, 10, 0, "layer"), DropoutMask.For(0.5f, 1, 11, 0, "layer"),
                     DropoutMask.For(0.5f, 1, 10, 1, "layer"), DropoutMask.For(0.5f, 1, 10, 0, "layer2") })
        {
            var agree = Run(a).Zip(Run(other)).Count(t => (t.First == 0) == (t.Second == 0));
            Assert.InRange(agree, 400, 600);                                    // independent masks agree about half the time
        }
        // A slice starting at index 500 sees the same mask as the whole run's elements 500.. (firstIndex offsets the index).
        var tail = new float[500];
        a.Apply(x.AsSpan(500, 500), 500, tail);
        Assert.Equal(Run(a)[500..], tail);
        Assert.Throws<ArgumentOutOfRangeException>(() => DropoutMask.For(1f, 1, 1, 0, "layer"));
    }

    [Fact]
    public void GradientMatchesFiniteDifferencesWithAFixedMask()
    {
        var rng = new Random(4);
        var x = GradCheck.Random(rng, 1, 6, 9);
        var w = GradCheck.Random(rng, 1, 5, 9);
        var mask = DropoutMask.For(0.4f, 5, 1, 0, "probe");
        GradCheck.Check(() => Functional.Linear(Functional.Dropout(x, mask), w), [x, w]);
        // In place on an accumulated gradient: x feeds the dropout and a plain Linear.
        GradCheck.Check(() => Functional.Add(Functional.Linear(Functional.Dropout(x, mask), w), Functional.Linear(x, w)), [x]);
    }
}
