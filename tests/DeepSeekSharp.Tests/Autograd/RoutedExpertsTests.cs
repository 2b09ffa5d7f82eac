using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>
/// <see cref="Functional.RoutedExperts"/>: all experts of a layer in one op, run concurrently, each expert its own
/// sub-graph; checked against finite differences and against running the experts one by one.
/// </summary>
public class RoutedExpertsTests
{
    // Stacked rows grouped by expert: expert 0 gets tokens 0, 2, 4; expert 1 none; expert 2 tokens 1, 2, 3, 0; expert 3 token 4.
    private static readonly int[] Rows = [0, 2, 4, 1, 2, 3, 0, 4];
    private static readonly int[] Offsets = [0, 3, 3, 7, 8];

    private static (Tensor X, Tensor[] W) Inputs(int seed)
    {
        var rng = new Random(seed);
        var x = GradCheck.Random(rng, 1, 5, 6);
        var w = new Tensor[4];
        for (int e = 0; e < w.Length; e++) w[e] = GradCheck.Random(rng, 1, 6, 6);
        return (x, w);
    }

    private static Tensor Expert(Tensor[] w, int e, Tensor rows)
    {
        Tensor h = Functional.Linear(rows, w[e]);
        return Functional.SiluMul(h, Functional.Linear(rows, w[e]));
    }

    [Fact]
    public void GradientsMatchFiniteDifferences()
    {
        var (x, w) = Inputs(1);
        GradCheck.Check(() => Functional.RoutedExperts(x, Rows, Offsets, (e, rows) => Expert(w, e, rows)), [x, w[0], w[2], w[3]]);
    }

    [Fact]
    public void ValuesAndGradientsEqualRunningTheExpertsOneByOne()
    {
        var (x, w) = Inputs(2);
        var target = new int[Rows.Length];
        for (int i = 0; i < target.Length; i++) target[i] = i % 6;
        var stacked = Functional.RoutedExperts(x, Rows, Offsets, (e, rows) => Expert(w, e, rows));
        var values = stacked.Span.ToArray();
        Backprop.Backward(Functional.CrossEntropy(stacked, target));
        var dx = x.Grad!.AsSpan(0, (int)x.Length).ToArray();
        // Pooled gradient buffers may be longer than their tensors: only the tensor's part is compared.
        var dw = w.Select(t => t.Grad?.AsSpan(0, (int)t.Length).ToArray()).ToArray();

        var (x2, w2) = Inputs(2);
        var parts = new List<float>();
        Tensor? loss = null;
        for (int e = 0; e < 4; e++)
        {
            int n = Offsets[e + 1] - Offsets[e];
            if (n == 0) continue;
            var y = Expert(w2, e, Functional.GatherRows(x2, Rows[Offsets[e]..Offsets[e + 1]]));
            parts.AddRange(y.Span.ToArray());
            // The mean over all rows equals the sum over experts of (rows_e / rows) · mean_e.
            var part = Functional.WeightedSum([Functional.CrossEntropy(y, target[Offsets[e]..Offsets[e + 1]])], [n / (float)Rows.Length]);
            loss = loss is null ? part : Functional.Add(loss, part);
        }
        Backprop.Backward(loss!);
        Assert.Equal(parts.ToArray(), values);
        AssertClose(x2.Grad!.AsSpan(0, (int)x2.Length).ToArray(), dx);
        Assert.Null(dw[1]);                                          // an expert without tokens gets no gradient
        foreach (int e in new[] { 0, 2, 3 }) AssertClose(w2[e].Grad!.AsSpan(0, (int)w2[e].Length).ToArray(), dw[e]!);
    }

    [Fact]
    public void FrozenInputStillTrainsTheExpertsAndWorkersFollowTheCallersGradMode()
    {
        var (x, w) = Inputs(3);
        x.RequiresGrad = false;
        var modes = new System.Collections.Concurrent.ConcurrentBag<bool>();
        var stacked = Functional.RoutedExperts(x, Rows, Offsets, (e, rows) => { modes.Add(GradMode.IsEnabled); return Expert(w, e, rows); });
        Assert.True(stacked.RequiresGrad);
        Backprop.Backward(Functional.CrossEntropy(stacked, [0, 1, 2, 3, 4, 5, 0, 1]));
        Assert.Null(x.Grad);
        Assert.NotNull(w[0].Grad);
        Assert.All(modes, Assert.True);

        modes.Clear();
        using (GradMode.NoGrad())
        {
            var plain = Functional.RoutedExperts(x, Rows, Offsets, (e, rows) => { modes.Add(GradMode.IsEnabled); return Expert(w, e, rows); });
            Assert.False(plain.RequiresGrad);
            Assert.Equal(stacked.Span.ToArray(), plain.Span.ToArray());
        }
        Assert.Equal(3, modes.Count);
        Assert.All(modes, Assert.False);
    }

    [Fact]
    public void BadOffsetsAreRejected()
    {
        var (x, w) = Inputs(4);
        Assert.Throws<ArgumentException>(() => Functional.RoutedExperts(x, Rows, [0, 3, 9], (e, rows) => Expert(w, e, rows)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Functional.RoutedExperts(x, [0, 7], [0, 2], (e, rows) => Expert(w, e, rows)));
    }

    private static void AssertClose(float[] expected, float[] actual)
    {
        float scale = expected.Max(Math.Abs);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * scale, $"[{i}] {expected[i]} vs {actual[i]}");
    }
}
