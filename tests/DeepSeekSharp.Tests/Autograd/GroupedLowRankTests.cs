using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>
/// The grouped expert GEMMs with LoRA paths (<see cref="GroupedLowRank"/>) and with frozen weights kept as stored (BF16,
/// FP8 blocks): checked against finite differences and against the per-expert module path built from the plain ops
/// (Linear / LinearCompressed, Dropout, Add), which is what Linear with a LoraLinear adapter computes.
/// </summary>
public class GroupedLowRankTests
{
    // Stacked rows grouped by expert: expert 0 gets all 20 tokens, expert 1 none, expert 2 the first 17, expert 3 three.
    private const int Tokens = 20, Hidden = 6, Inter = 5, Experts = 4;
    private static readonly int[] Rows = [.. Enumerable.Range(0, Tokens), .. Enumerable.Range(0, 17), 5, 9, 13];
    private static readonly int[] Offsets = [0, Tokens, Tokens, Tokens + 17, Tokens + 20];
    private static readonly int[] Targets = [.. Enumerable.Range(0, Rows.Length).Select(i => i % Hidden)];

    private sealed record Case(Tensor X, ExpertLinear[] Gate, ExpertLinear[] Up, ExpertLinear[] Down)
    {
        public IEnumerable<LowRankAdapter> Adapters => Gate.Concat(Up).Concat(Down).Select(p => p.Adapter).OfType<LowRankAdapter>();
    }

    /// <summary>
    /// Adapters: gate on experts 0, 1, 2 (rank 3; expert 3 has none: it adds nothing), up on all (rank 3), down on 0 and 2
    /// (rank 2); scales differ per expert. B is random (not PEFT's zero) so every product matters. With
    /// <paramref name="storage"/> ≠ Fp32 the base weights are stored compressed and frozen.
    /// </summary>
    private static Case Make(int seed, float dropout = 0, WeightStorage storage = WeightStorage.Fp32)
    {
        var rng = new Random(seed);
        var x = GradCheck.Random(rng, 1, Tokens, Hidden);
        ExpertLinear[] gate = new ExpertLinear[Experts], up = new ExpertLinear[Experts], down = new ExpertLinear[Experts];
        for (int e = 0; e < Experts; e++)
        {
            gate[e] = Projection(rng, Inter, Hidden, e < 3 ? 3 : 0, 0.5f + e, dropout, storage, $"e{e}.gate");
            up[e] = Projection(rng, Inter, Hidden, 3, 2f - 0.25f * e, dropout, storage, $"e{e}.up");
            down[e] = Projection(rng, Hidden, Inter, e % 2 == 0 ? 2 : 0, 1.5f, dropout, storage, $"e{e}.down");
        }
        return new Case(x, gate, up, down);
    }

    private static ExpertLinear Projection(Random rng, int outDim, int inDim, int rank, float scale, float dropout, WeightStorage storage, string name)
    {
        var w = GradCheck.Random(rng, 1, outDim, inDim);
        CompressedWeight? stored = null;
        if (storage != WeightStorage.Fp32)
        {
            stored = CompressedWeight.Compress(w.Span, outDim, inDim, storage);
            w.RequiresGrad = false;
        }
        LowRankAdapter? adapter = rank == 0 ? null : new LowRankAdapter(GradCheck.Random(rng, 1, rank, inDim), GradCheck.Random(rng, 0.5f, outDim, rank), scale,
            dropout > 0 ? DropoutMask.For(dropout, 7, 3, 1, name) : null);
        return new ExpertLinear(w, stored, adapter);
    }

    private static Tensor Grouped(Case c) => Functional.GroupedSwiGluExperts(c.X, Rows, Offsets, c.Gate, c.Up, c.Down);

    private static Tensor PerExpert(Case c) =>
        Functional.RoutedExperts(c.X, Rows, Offsets, (e, rows) =>
            Project(Functional.SiluMul(Project(rows, c.Gate[e]), Project(rows, c.Up[e])), c.Down[e]));

    /// <summary>What Linear computes with a LoraLinear adapter: base(x) + scale·B·A·drop(x).</summary>
    private static Tensor Project(Tensor x, ExpertLinear p)
    {
        var y = p.Stored is { } s ? Functional.LinearCompressed(x, s) : Functional.Linear(x, p.Weight);
        if (p.Adapter is not { } a) return y;
        var input = a.Dropout is { } mask ? Functional.Dropout(x, mask) : x;
        return Functional.Add(y, Functional.Linear(Functional.Linear(input, a.A), a.B), a.Scale);
    }

    [Theory]
    [InlineData(0f, WeightStorage.Fp32)]
    [InlineData(0.4f, WeightStorage.Fp32)]
    [InlineData(0f, WeightStorage.Bf16)]
    [InlineData(0.4f, WeightStorage.Fp8Block)]
    public void ValuesAndGradientsEqualThePerExpertModulePath(float dropout, WeightStorage storage)
    {
        var grouped = Make(2, dropout, storage);
        long before = GroupedExpertsOp.Calls;
        var y = Grouped(grouped);
        Assert.True(GroupedExpertsOp.Calls > before);
        Backprop.Backward(Functional.CrossEntropy(y, Targets));
        var reference = Make(2, dropout, storage);
        var yRef = PerExpert(reference);
        Backprop.Backward(Functional.CrossEntropy(yRef, Targets));

        AssertClose(yRef.Span.ToArray(), y.Span.ToArray());
        AssertClose(GradOf(reference.X), GradOf(grouped.X));
        foreach (var (want, got) in reference.Adapters.Zip(grouped.Adapters))
        {
            bool used = want.A.Grad is not null; // the module path never runs an expert without tokens
            Assert.Equal(used, got.A.Grad is not null && got.A.Grad.Any(v => v != 0));
            if (!used) continue;
            AssertClose(GradOf(want.A), GradOf(got.A));
            AssertClose(GradOf(want.B), GradOf(got.B));
        }
        // Expert 1 received no token: its adapters did no work.
        Assert.True(grouped.Up[1].Adapter!.A.Grad is null || grouped.Up[1].Adapter!.A.Grad!.All(v => v == 0f));
        if (storage == WeightStorage.Fp32)
        {
            foreach (int e in new[] { 0, 2, 3 }) AssertClose(GradOf(reference.Down[e].Weight), GradOf(grouped.Down[e].Weight));
        }
        else Assert.All(grouped.Gate.Concat(grouped.Up).Concat(grouped.Down), p => Assert.Null(p.Weight.Grad));
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(0.3f)]
    public void LowRankGradientsMatchFiniteDifferences(float dropout)
    {
        var c = Make(1, dropout);
        foreach (var p in c.Gate.Concat(c.Up).Concat(c.Down)) p.Weight.RequiresGrad = false;
        GradCheck.Check(() => Grouped(c), [c.X, c.Gate[0].Adapter!.A, c.Gate[2].Adapter!.B, c.Up[3].Adapter!.A, c.Up[0].Adapter!.B,
            c.Down[0].Adapter!.A, c.Down[2].Adapter!.B]);
    }

    [Fact]
    public void AdaptersOfOneProjectionMustShareARank()
    {
        var c = Make(3);
        var up = (ExpertLinear[])c.Up.Clone();
        var rng = new Random(9);
        up[2] = up[2] with { Adapter = new LowRankAdapter(GradCheck.Random(rng, 1, 2, Hidden), GradCheck.Random(rng, 1, Inter, 2), 1f) };
        Assert.False(Functional.CanGroupSwiGluExperts(c.Gate, up, c.Down));
        Assert.True(Functional.CanGroupSwiGluExperts(c.Gate, c.Up, c.Down));
        Assert.Throws<ArgumentException>(() => Functional.GroupedSwiGluExperts(c.X, Rows, Offsets, c.Gate, up, c.Down));
    }

    private static float[] GradOf(Tensor t) => t.Grad!.AsSpan(0, (int)t.Length).ToArray();

    private static void AssertClose(float[] expected, float[] actual)
    {
        float scale = expected.Max(Math.Abs);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * scale, $"[{i}] {expected[i]} vs {actual[i]}");
    }
}
