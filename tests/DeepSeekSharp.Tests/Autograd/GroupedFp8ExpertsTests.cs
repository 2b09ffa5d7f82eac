using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>
/// <c>Functional.GroupedSwiGluExpertsFp8</c>: FP8 routed experts as grouped GEMMs against the per-expert FP8 module path
/// (<see cref="Functional.RoutedExperts"/> over <see cref="Functional.LinearFp8"/> and <see cref="Functional.SiluMul"/>,
/// whose recipe Fp8LinearTests check against dequantise-then-fp32 references). Every number is compared bit for bit:
/// both paths quantise the same values with the same tiles, run the same GEMM driver's arithmetic per expert, and add
/// a token's input gradients in the same (expert) order.
/// </summary>
public class GroupedFp8ExpertsTests
{
    // Hidden 200 and intermediate 136: partial 128 tiles in both, and 136 is no multiple of the SwiGLU kernel's 16 lanes.
    private const int Hidden = 200, Inter = 136, Tokens = 150, Experts = 5;
    private static readonly int[] Rows;
    private static readonly int[] Offsets;

    static GroupedFp8ExpertsTests()
    {
        // Expert 0 gets one token, expert 1 none, expert 2 all 150 (a partial 128×1 tile in its weight gradients),
        // expert 3 the first 40, expert 4 every third: token 0 has three experts, so the order of its sum matters.
        int[][] perExpert = [[5], [], Enumerable.Range(0, Tokens).ToArray(), Enumerable.Range(0, 40).ToArray(),
            Enumerable.Range(0, Tokens).Where(t => t % 3 == 0).ToArray()];
        Rows = perExpert.SelectMany(r => r).ToArray();
        Offsets = new int[Experts + 1];
        for (int e = 0; e < Experts; e++) Offsets[e + 1] = Offsets[e] + perExpert[e].Length;
    }

    private sealed record Problem(Tensor X, Tensor[] Gate, Tensor[] Up, Tensor[] Down, float[] Coefficients);

    private static Problem Inputs(int seed)
    {
        var rng = new Random(seed);
        var x = GradCheck.Random(rng, 1, Tokens, Hidden);
        Tensor[] gate = new Tensor[Experts], up = new Tensor[Experts], down = new Tensor[Experts];
        for (int e = 0; e < Experts; e++)
        {
            gate[e] = GradCheck.Random(rng, 0.05f, Inter, Hidden);
            up[e] = GradCheck.Random(rng, 0.05f, Inter, Hidden);
            down[e] = GradCheck.Random(rng, 0.05f, Hidden, Inter);
        }
        // A loss Σ c·y with coefficients over four decades, so dy's tiles have scales of their own.
        var c = new float[Rows.Length * Hidden];
        for (int i = 0; i < c.Length; i++) c[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-2, 2)));
        return new Problem(x, gate, up, down, c);
    }

    private static Tensor Grouped(Problem p, bool cache) =>
        Functional.GroupedSwiGluExpertsFp8(p.X, Rows, Offsets, p.Gate, p.Up, p.Down, cache);

    private static Tensor PerExpert(Problem p, bool cache) =>
        Functional.RoutedExperts(p.X, Rows, Offsets, (e, rows) => Functional.LinearFp8(
            Functional.SiluMul(Functional.LinearFp8(rows, p.Gate[e]), Functional.LinearFp8(rows, p.Up[e]), fp8InputCache: cache), p.Down[e]));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ValuesAndEveryGradientEqualThePerExpertFp8ModulePathBitForBit(bool fp8SwiGluCache)
    {
        var grouped = Inputs(7);
        long calls = GroupedFp8ExpertsOp.Calls;
        var y = Grouped(grouped, fp8SwiGluCache);
        Assert.Equal(calls + 1, GroupedFp8ExpertsOp.Calls);
        Backprop.Backward(Functional.Dot(y, grouped.Coefficients));
        var reference = Inputs(7);
        var yRef = PerExpert(reference, fp8SwiGluCache);
        Backprop.Backward(Functional.Dot(yRef, reference.Coefficients));

        Assert.Equal(yRef.Span.ToArray(), y.Span.ToArray());
        Assert.Equal(GradOf(reference.X), GradOf(grouped.X));
        for (int e = 0; e < Experts; e++)
        {
            if (e == 1)
            {
                // No tokens: no gradient work (the module path never runs this expert either).
                Assert.All(new[] { grouped.Gate[1], grouped.Up[1], grouped.Down[1] }, w => Assert.True(w.Grad is null || w.Grad.All(v => v == 0f)));
                continue;
            }
            Assert.Equal(GradOf(reference.Gate[e]), GradOf(grouped.Gate[e]));
            Assert.Equal(GradOf(reference.Up[e]), GradOf(grouped.Up[e]));
            Assert.Equal(GradOf(reference.Down[e]), GradOf(grouped.Down[e]));
        }
    }

    [Fact]
    public void TheFp8PathDiffersFromFp32AndTheSwiGluCacheChangesOnlyWhatItShould()
    {
        // Not vacuous: the FP8 outputs are not the fp32 ones, and caching the SwiGLU inputs in FP8 leaves the forward
        // alone but moves the gradients behind the SwiGLU.
        var p = Inputs(8);
        var fp32 = Functional.GroupedSwiGluExperts(p.X, Rows, Offsets, p.Gate, p.Up, p.Down);
        var cached = Inputs(8);
        var y = Grouped(cached, true);
        Backprop.Backward(Functional.Dot(y, cached.Coefficients));
        var plain = Inputs(8);
        var yPlain = Grouped(plain, false);
        Backprop.Backward(Functional.Dot(yPlain, plain.Coefficients));

        float[] a = fp32.Span.ToArray(), b = y.Span.ToArray();
        double worst = a.Zip(b, (u, v) => Math.Abs(u - v)).Max(), scale = a.Max(Math.Abs);
        Assert.InRange(worst / scale, 1e-4, 0.2); // FP8 error: a few per cent at most, far above rounding
        Assert.Equal(yPlain.Span.ToArray(), b);
        Assert.Equal(GradOf(plain.Down[2]), GradOf(cached.Down[2]));
        Assert.NotEqual(GradOf(plain.Gate[2]), GradOf(cached.Gate[2]));
        Assert.NotEqual(GradOf(plain.X), GradOf(cached.X));
    }

    [Fact]
    public void FrozenWeightsGetNoGradientAndNoGradModeRecordsNothing()
    {
        var p = Inputs(9);
        p.X.RequiresGrad = false;
        foreach (var w in p.Gate.Concat(p.Up).Concat(p.Down)) w.RequiresGrad = false;
        p.Down[3].RequiresGrad = true; // ESFT-style: train one weight of one expert
        var y = Grouped(p, true);
        Backprop.Backward(Functional.Dot(y, p.Coefficients));
        var reference = Inputs(9);
        reference.X.RequiresGrad = false;
        foreach (var w in reference.Gate.Concat(reference.Up).Concat(reference.Down)) w.RequiresGrad = false;
        reference.Down[3].RequiresGrad = true;
        Backprop.Backward(Functional.Dot(PerExpert(reference, true), reference.Coefficients));
        Assert.Equal(GradOf(reference.Down[3]), GradOf(p.Down[3]));
        Assert.Null(p.X.Grad);
        Assert.All(p.Gate.Concat(p.Up), w => Assert.Null(w.Grad));

        using (GradMode.NoGrad())
        {
            var plain = Grouped(Inputs(9), true);
            Assert.Null(plain.GradFn);
            Assert.Equal(y.Span.ToArray(), plain.Span.ToArray());
        }
    }

    [Fact]
    public void BadShapesAreRejectedNamingTheExpert()
    {
        var p = Inputs(10);
        var wrongUp = (Tensor[])p.Up.Clone();
        wrongUp[4] = GradCheck.Random(new Random(5), 1, Inter, Hidden + 1);
        var ex = Assert.Throws<ArgumentException>(() => Functional.GroupedSwiGluExpertsFp8(p.X, Rows, Offsets, p.Gate, wrongUp, p.Down));
        Assert.Contains("expert 4 up_proj", ex.Message);
    }

    private static float[] GradOf(Tensor t) => t.Grad!.AsSpan(0, (int)t.Length).ToArray();
}
