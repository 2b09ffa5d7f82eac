using DeepSeekSharp.Autograd;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Rl;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Autograd;

namespace DeepSeekSharp.Tests.Rl;

/// <summary>
/// GRPO's objective against PyTorch autograd (tools/reference/grpo_reference.py: the loss written as TRL writes it,
/// differentiated by torch) for four loss types, with clipping on both sides, a KL term, a temperature and on-policy
/// ratios; and the pieces against finite differences.
/// </summary>
public class GrpoObjectiveTests
{
    private static readonly Random Rng = new(5);

    [Theory]
    [InlineData("grpo-beta")]
    [InlineData("dapo-clip-higher")]
    [InlineData("bnpo-on-policy")]
    [InlineData("dr-grpo")]
    public void LossAndGradientsMatchPyTorch(string name)
    {
        using var f = SafeTensorsReader.Open(TestPaths.Fixture(Path.Combine("grpo", name + ".safetensors")));
        var meta = f.Metadata;
        float P(string key) => float.Parse(meta[key], System.Globalization.CultureInfo.InvariantCulture);
        var settings = new GrpoSettings(P("beta"), P("eps_low"), P("eps_high"), meta["loss_type"] switch
        {
            "grpo" => GrpoLossType.Grpo, "bnpo" => GrpoLossType.Bnpo, "dr_grpo" => GrpoLossType.DrGrpo, _ => GrpoLossType.Dapo,
        }, (int)P("max_completion_length"));
        int[] targets = f.ReadInt64("targets").Select(v => (int)v).ToArray(), completion = f.ReadInt64("completion").Select(v => (int)v).ToArray();
        float[] hData = f.ReadFloat32("h"), wData = f.ReadFloat32("w");
        int rows = targets.Length, hidden = hData.Length / rows, vocab = wData.Length / hidden;
        var h = Tensor.FromArray(hData, rows, hidden); h.RequiresGrad = true;
        var w = Tensor.FromArray(wData, vocab, hidden); w.RequiresGrad = true;

        var adv = GroupAdvantages.Compute(f.ReadFloat32("rewards"), (int)P("group"), RewardScaling.Group);
        float[] expectedAdv = f.ReadFloat32("advantages");
        for (int i = 0; i < expectedAdv.Length; i++) Assert.Equal(expectedAdv[i], adv.Advantages[i], 5);

        var logp = Functional.TokenLogProbs(h, w, targets, P("temperature"));
        float[] expectedLogp = f.ReadFloat32("logp");
        for (int t = 0; t < rows; t++)
            if (targets[t] >= 0) Assert.True(Math.Abs(expectedLogp[t] - logp.Data[t]) < 1e-4, $"logp[{t}] {logp.Data[t]} vs {expectedLogp[t]}");

        var tokens = new GrpoTokens(completion, adv.Advantages, meta["with_old"] == "True" ? f.ReadFloat32("old") : null, f.ReadFloat32("ref"));
        var batch = new GrpoBatchSize(adv.Advantages.Length, completion.Count(c => c >= 0));
        var terms = GrpoObjective.Evaluate(logp.Span, tokens, settings, batch);
        double expectedLoss = BitConverter.ToDouble(f.GetBytes(f.Get("loss")));
        Assert.True(Math.Abs(terms.Loss - expectedLoss) < 1e-5 * Math.Max(1, Math.Abs(expectedLoss)), $"loss {terms.Loss} vs {expectedLoss}");
        if (tokens.BehaviourLogProbs is not null) Assert.True(terms.LowClipped > 0 && terms.HighClipped > 0, "the case must clip on both sides");

        Backprop.Backward(Functional.Dot(logp, terms.LogProbGradient));
        AssertClose(f.ReadFloat32("dh"), h.Grad!, "dh");
        AssertClose(f.ReadFloat32("dw"), w.Grad!, "dw");
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        float scale = expected.Max(Math.Abs);
        Assert.True(scale > 0, $"{what}: the reference gradient is zero (the case tests nothing)");
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 2e-5 * scale + 1e-7, $"{what}[{i}]: {actual[i]} vs {expected[i]}");
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(0.6f)]
    public void TokenLogProbsMatchFiniteDifferences(float temperature)
    {
        var h = GradCheck.Random(Rng, 1, 6, 5); var w = GradCheck.Random(Rng, 1, 11, 5);
        int[] targets = [3, -1, 10, 0, 7, 7];
        float[] c = [0.5f, 2f, -1.3f, 0.8f, 0.1f, -0.4f];
        GradCheck.Check(() => Functional.Dot(Functional.TokenLogProbs(h, w, targets, temperature), c), [h, w]);
    }

    [Fact]
    public void TokenLogProbsOverSeveralBlocksEqualTheLogSoftmax()
    {
        const int rows = 150, v = 40_000, hidden = 8;
        var h = GradCheck.Random(Rng, 1, rows, hidden); var w = GradCheck.Random(Rng, 0.3f, v, hidden);
        var targets = Enumerable.Range(0, rows).Select(i => i % 9 == 4 ? -1 : Rng.Next(v)).ToArray();
        var logp = Functional.TokenLogProbs(h, w, targets);
        var logits = Functional.Linear(h, w).Data;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] < 0) { Assert.Equal(0f, logp.Data[r]); continue; }
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < v; j++) max = Math.Max(max, logits[r * v + j]);
            for (int j = 0; j < v; j++) sum += Math.Exp(logits[r * v + j] - max);
            double expected = logits[r * v + targets[r]] - max - Math.Log(sum);
            Assert.True(Math.Abs(expected - logp.Data[r]) < 1e-4, $"row {r}: {logp.Data[r]} vs {expected}");
        }
    }

    [Fact]
    public void TheKlTermsGradientMatchesFiniteDifferences()
    {
        // β only (zero advantages): L = β/N Σ k3(ref − logp), differentiated against central differences in logp.
        float[] logp = [-1.2f, -0.3f, -2.5f, -0.9f], reference = [-1.0f, -0.8f, -2.0f, -0.9f];
        var tokens = new GrpoTokens([0, 0, 1, 1], [0f, 0f], null, reference);
        var settings = new GrpoSettings(Beta: 0.3f, LossType: GrpoLossType.Bnpo);
        var batch = new GrpoBatchSize(2, 4);
        var terms = GrpoObjective.Evaluate(logp, tokens, settings, batch);
        for (int t = 0; t < logp.Length; t++)
        {
            const float eps = 1e-3f;
            float[] up = (float[])logp.Clone(), down = (float[])logp.Clone();
            up[t] += eps; down[t] -= eps;
            double numeric = (GrpoObjective.Evaluate(up, tokens, settings, batch).Loss - GrpoObjective.Evaluate(down, tokens, settings, batch).Loss) / (2 * eps);
            Assert.True(Math.Abs(numeric - terms.LogProbGradient[t]) < 1e-4, $"token {t}: {terms.LogProbGradient[t]} vs {numeric}");
        }
        Assert.True(terms.KlSum > 0);
    }

    [Fact]
    public void TiedGroupsHaveNoAdvantageAndAreCounted()
    {
        var r = GroupAdvantages.Compute([1f, 1f, 1f, 0f, 1f, 0.5f], 3, RewardScaling.Group);
        Assert.Equal(1, r.TiedGroups);
        Assert.Equal([0f, 0f, 0f], r.Advantages[..3]);
        Assert.True(r.Advantages[4] > 0 && r.Advantages[3] < 0);
        var e = Assert.Throws<DeepSeekSharpException>(() => GroupAdvantages.Compute([1f, 0f, 1f], 2, RewardScaling.Group));
        Assert.Contains("num_generations = 2", e.Message);
    }
}
