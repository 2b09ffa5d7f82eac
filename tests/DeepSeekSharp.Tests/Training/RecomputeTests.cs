using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>
/// <c>recompute_norms</c> / <c>recompute_mla_up</c>: RMSNorm outputs and MLA's up-projections dropped after the forward
/// and recomputed in the backward.
/// </summary>
public class RecomputeTests
{
    private static (float Loss, Dictionary<string, float[]> Grads, int Dropped) Step(bool recompute, bool recomputeUp = false, string precision = "fp32")
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        DeepSeekSharp.Fp8.Fp8Training.Apply(model, precision);
        model.RecomputeNorms(recompute);
        model.RecomputeMlaUpProjections(recomputeUp);
        int[] tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3];
        var batch = SequenceBatch.Training(2, 8);
        model.ZeroGrad();
        long before = DeepSeekSharp.Autograd.Ops.RmsNormOp.Recomputations, beforeUp = DeepSeekSharp.Autograd.Ops.LinearOp.Recomputations;
        var loss = LanguageModelLoss.Compute(model, tokens, batch, 0.3f, 1);
        Backprop.Backward(loss.Total, freeActivations: true);
        // The dropped values the backward read were rebuilt (the counters are process-wide; only this class recomputes).
        int dropped = (int)(DeepSeekSharp.Autograd.Ops.RmsNormOp.Recomputations - before);
        int droppedUp = (int)(DeepSeekSharp.Autograd.Ops.LinearOp.Recomputations - beforeUp);
        Assert.Equal(recomputeUp ? 2 * 4 : 0, droppedUp); // q_b and kv_b in each of the 4 blocks (3 layers + MTP)
        var grads = model.NamedParameters().Where(p => p.Parameter.Grad is not null)
            .ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray());
        return (loss.Total.Span[0], grads, dropped);
    }

    [Fact]
    public void RecomputedNormsGiveBitIdenticalLossAndGradients()
    {
        var kept = Step(recompute: false);
        var recomputed = Step(recompute: true);
        Assert.Equal(0, kept.Dropped);
        // Per decoder block: the attention and FFN input norms and MLA's q_a and kv_a norms; v3-tiny has 3 layers plus
        // the MTP module's block.
        Assert.Equal(4 * 4, recomputed.Dropped);
        Assert.Equal(kept.Loss, recomputed.Loss);
        Assert.Equal(kept.Grads.Keys.OrderBy(k => k), recomputed.Grads.Keys.OrderBy(k => k));
        foreach (var (name, g) in kept.Grads) Assert.True(g.SequenceEqual(recomputed.Grads[name]), name);
    }

    [Theory]
    [InlineData(false, "fp32")]
    [InlineData(true, "fp32")]
    [InlineData(true, "fp8")]
    public void RecomputedMlaUpProjectionsGiveBitIdenticalLossAndGradients(bool alsoNorms, string precision)
    {
        var kept = Step(recompute: false, precision: precision);
        var recomputed = Step(recompute: alsoNorms, recomputeUp: true, precision: precision);
        Assert.Equal(kept.Loss, recomputed.Loss);
        Assert.Equal(kept.Grads.Keys.OrderBy(k => k), recomputed.Grads.Keys.OrderBy(k => k));
        foreach (var (name, g) in kept.Grads) Assert.True(g.SequenceEqual(recomputed.Grads[name]), name);
    }

    [Fact]
    public void ANormOutputWithTheRecomputePolicyIsDroppedWhenItsScopeEndsAndRecomputedOnRead()
    {
        var rng = new Random(5);
        var x = DeepSeekSharp.Tests.Autograd.GradCheck.Random(rng, 1, 4, 16);
        var norm = new DeepSeekSharp.Nn.RmsNorm(16, 1e-6f, materialize: true) { RecomputeOutput = true };
        norm.Weight.Span.Fill(1.5f);
        var w = DeepSeekSharp.Tests.Autograd.GradCheck.Random(rng, 1, 3, 16);
        Tensor y, z;
        float[] expected;
        using (var scope = TensorScope.Begin())
        {
            y = norm.Forward(x);
            expected = y.Span.ToArray();
            z = scope.Keep(Functional.Linear(y, w));      // the fp32 Linear's backward reads y
        }
        Assert.True(y.IsMeta);                            // dropped when the scope ended...
        Assert.Equal(expected, y.Span.ToArray());         // ...and recomputed, bit-identical, on the next read
        norm.RecomputeOutput = false;
        Tensor y2;
        using (var scope = TensorScope.Begin())
        {
            y2 = norm.Forward(x);
            scope.Keep(Functional.Linear(y2, w));
        }
        Assert.False(y2.IsMeta);                          // without the policy a value a backward reads stays
        Assert.Equal(expected, y2.Span.ToArray());
        GC.KeepAlive(z);
    }
}
