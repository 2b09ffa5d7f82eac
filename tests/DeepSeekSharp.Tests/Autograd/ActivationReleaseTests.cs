using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary><see cref="Tensor.ReleaseIfUnread"/>: values go only when no recorded op reads them, and gradients still flow.</summary>
public class ActivationReleaseTests
{
    private static (Tensor X, Tensor B, Tensor W) Inputs()
    {
        var rng = new Random(2);
        return (GradCheck.Random(rng, 1, 6, 130), GradCheck.Random(rng, 1, 6, 130), GradCheck.Random(rng, 1, 5, 130));
    }

    private static float[] GradThroughFp8Linear(bool release)
    {
        var (x, b, w) = Inputs();
        var sum = Functional.Add(x, b);                  // an intermediate whose values only the FP8 Linear consumes
        var y = Functional.LinearFp8(sum, w);
        Assert.Equal(release, release && sum.ReleaseIfUnread());
        if (release) Assert.Throws<InvalidOperationException>(() => sum.Span.ToArray());
        Backprop.Backward(Functional.CrossEntropy(y, [0, 1, 2, 3, 4, 0]));
        return x.Grad!.AsSpan(0, (int)x.Length).ToArray();
    }

    [Fact]
    public void AnFp8LinearsInputIsDroppedAndTheGradientIsUnchanged()
    {
        Assert.Equal(GradThroughFp8Linear(release: false), GradThroughFp8Linear(release: true));
    }

    [Fact]
    public void ValuesAReadingBackwardNeedsAreKept()
    {
        var (x, b, w) = Inputs();
        var sum = Functional.Add(x, b);
        var y = Functional.Linear(sum, w);               // the fp32 Linear's weight gradient reads its input
        Assert.False(sum.ReleaseIfUnread());
        var s = Functional.Sigmoid(y);                   // sigmoid's backward reads its own output
        Assert.False(s.ReleaseIfUnread());
        Assert.False(w.ReleaseIfUnread());               // parameters are never released
        Assert.Equal(sum.Length, sum.Span.Length);
    }

    [Fact]
    public void WithoutRecordingEveryIntermediateMayGo()
    {
        var (x, b, w) = Inputs();
        using (GradMode.NoGrad())
        {
            var sum = Functional.Add(x, b);
            Functional.Linear(sum, w);
            Assert.True(sum.ReleaseIfUnread());
        }
    }
}

/// <summary>Recycled gradient buffers never alias a gradient still in use (the test run pools every size, see PoolEverything).</summary>
public class GradBufferReuseTests
{
    [Fact]
    public void ABufferHandedToALeafIsNotRecycled()
    {
        var rng = new Random(4);
        var x = GradCheck.Random(rng, 1, 4, 6); var w = GradCheck.Random(rng, 1, 6, 6);
        // The Add's gradient buffer goes to x (its first input, still without a gradient), then the Linear adds to it.
        Backprop.Backward(Functional.CrossEntropy(Functional.Add(x, Functional.Linear(x, w)), [0, 1, 2, 3]));
        var kept = (float[])x.Grad!.Clone();
        // More backward passes over same-shaped graphs rent and clear buffers of the same length.
        for (int i = 0; i < 3; i++)
        {
            var y = GradCheck.Random(rng, 1, 4, 6);
            Backprop.Backward(Functional.CrossEntropy(Functional.Add(Functional.Linear(y, w), Functional.Sigmoid(y)), [3, 2, 1, 0]));
        }
        Assert.Equal(kept, x.Grad);
    }
}
