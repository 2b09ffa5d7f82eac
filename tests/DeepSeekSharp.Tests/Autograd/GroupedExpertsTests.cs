using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>
/// <c>Functional.GroupedSwiGluExperts</c>: every routed SwiGLU expert of a layer as grouped GEMMs. Checked against
/// finite differences and against the per-expert module path (<see cref="Functional.RoutedExperts"/> over
/// Linear / SiluMul, itself checked against PyTorch through the model parity tests).
/// </summary>
public class GroupedExpertsTests
{
    // Stacked rows grouped by expert: expert 0 gets tokens 0, 2, 4; expert 1 none; expert 2 tokens 1, 2, 3, 0; expert 3 token 4.
    private static readonly int[] Rows = [0, 2, 4, 1, 2, 3, 0, 4];
    private static readonly int[] Offsets = [0, 3, 3, 7, 8];
    private const int Hidden = 6, Inter = 5, Experts = 4;

    private static (Tensor X, Tensor[] Gate, Tensor[] Up, Tensor[] Down) Inputs(int seed)
    {
        var rng = new Random(seed);
        var x = GradCheck.Random(rng, 1, 5, Hidden);
        Tensor[] gate = new Tensor[Experts], up = new Tensor[Experts], down = new Tensor[Experts];
        for (int e = 0; e < Experts; e++)
        {
            gate[e] = GradCheck.Random(rng, 1, Inter, Hidden);
            up[e] = GradCheck.Random(rng, 1, Inter, Hidden);
            down[e] = GradCheck.Random(rng, 1, Hidden, Inter);
        }
        return (x, gate, up, down);
    }

    private static Tensor Grouped((Tensor X, Tensor[] Gate, Tensor[] Up, Tensor[] Down) p) =>
        Functional.GroupedSwiGluExperts(p.X, Rows, Offsets, p.Gate, p.Up, p.Down);

    private static Tensor PerExpert((Tensor X, Tensor[] Gate, Tensor[] Up, Tensor[] Down) p) =>
        Functional.RoutedExperts(p.X, Rows, Offsets, (e, rows) =>
            Functional.Linear(Functional.SiluMul(Functional.Linear(rows, p.Gate[e]), Functional.Linear(rows, p.Up[e])), p.Down[e]));

    [Fact]
    public void GradientsMatchFiniteDifferences()
    {
        var p = Inputs(1);
        GradCheck.Check(() => Grouped(p), [p.X, p.Gate[0], p.Up[2], p.Down[3], p.Down[0], p.Gate[3]]);
    }

    [Fact]
    public void ValuesAndGradientsEqualThePerExpertModulePath()
    {
        var target = Enumerable.Range(0, Rows.Length).Select(i => i % Hidden).ToArray();
        var grouped = Inputs(2);
        var y = Grouped(grouped);
        Backprop.Backward(Functional.CrossEntropy(y, target));
        var reference = Inputs(2);
        var yRef = PerExpert(reference);
        Backprop.Backward(Functional.CrossEntropy(yRef, target));

        AssertClose(yRef.Span.ToArray(), y.Span.ToArray());
        AssertClose(GradOf(reference.X), GradOf(grouped.X));
        for (int e = 0; e < Experts; e++)
        {
            if (e == 1)
            {
                // An expert without tokens: no gradient work at all (the module path never runs it either).
                Assert.True(grouped.Gate[1].Grad is null || grouped.Gate[1].Grad!.All(v => v == 0f));
                continue;
            }
            AssertClose(GradOf(reference.Gate[e]), GradOf(grouped.Gate[e]));
            AssertClose(GradOf(reference.Up[e]), GradOf(grouped.Up[e]));
            AssertClose(GradOf(reference.Down[e]), GradOf(grouped.Down[e]));
        }
    }

    [Fact]
    public void FrozenExpertsGetNoGradientAndNoGradModeRecordsNothing()
    {
        var p = Inputs(3);
        p.X.RequiresGrad = false;
        foreach (var w in p.Gate.Concat(p.Up).Concat(p.Down)) w.RequiresGrad = false;
        p.Down[2].RequiresGrad = true; // ESFT-style: train one weight of one expert
        var y = Grouped(p);
        Assert.True(y.RequiresGrad);
        Backprop.Backward(Functional.CrossEntropy(y, [0, 1, 2, 3, 4, 5, 0, 1]));
        Assert.NotNull(p.Down[2].Grad);
        Assert.Null(p.X.Grad);
        Assert.All(p.Gate.Concat(p.Up), w => Assert.Null(w.Grad));

        using (GradMode.NoGrad())
        {
            var plain = Grouped(Inputs(3));
            Assert.False(plain.RequiresGrad);
            Assert.Null(plain.GradFn);
            AssertClose(y.Span.ToArray(), plain.Span.ToArray());
        }
    }

    [Fact]
    public void BadShapesAndOffsetsAreRejected()
    {
        var p = Inputs(4);
        Assert.Throws<ArgumentException>(() => Functional.GroupedSwiGluExperts(p.X, Rows, [0, 3, 9, 9, 8], p.Gate, p.Up, p.Down));
        Assert.Throws<ArgumentOutOfRangeException>(() => Functional.GroupedSwiGluExperts(p.X, [0, 7], [0, 2, 2, 2, 2], p.Gate, p.Up, p.Down));
        var wrongDown = (Tensor[])p.Down.Clone();
        wrongDown[3] = GradCheck.Random(new Random(5), 1, Inter, Hidden);
        var ex = Assert.Throws<ArgumentException>(() => Functional.GroupedSwiGluExperts(p.X, Rows, Offsets, p.Gate, p.Up, wrongDown));
        Assert.Contains("expert 3 down_proj", ex.Message);
    }

    private static float[] GradOf(Tensor t) => t.Grad!.AsSpan(0, (int)t.Length).ToArray();

    private static void AssertClose(float[] expected, float[] actual)
    {
        float scale = expected.Max(Math.Abs);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * scale, $"[{i}] {expected[i]} vs {actual[i]}");
    }
}
