using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary><c>precision: fp8</c> on a whole model: where the E5M6 o_proj input cache applies and what it changes, and
/// that the routed experts' grouped FP8 path computes the per-expert module path's step.</summary>
public class Fp8RecipeTests
{
    private static (float Loss, Dictionary<string, float[]> Grads, DeepSeekModel Model) Step(bool e5m6, bool groupedExperts = true,
        bool swigluCache = true)
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        Fp8Training.Apply(model, "fp8", swigluCache: swigluCache, e5m6OProjCache: e5m6);
        foreach (var moe in model.NamedModules().Select(m => m.Module).OfType<Moe>()) moe.GroupedExperts = groupedExperts;
        int[] tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3];
        model.ZeroGrad();
        var loss = LanguageModelLoss.Compute(model, tokens, SequenceBatch.Training(2, 8), 0.3f, 1);
        Backprop.Backward(loss.Total, freeActivations: true);
        var grads = model.NamedParameters().Where(p => p.Parameter.Grad is not null).ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray());
        return (loss.Total.Span[0], grads, model);
    }

    [Fact]
    public void TheE5M6CacheIsOnEveryOProjAndChangesOnlyTheirWeightGradients()
    {
        var fine = Step(e5m6: true);
        var plain = Step(e5m6: false);
        var oProj = Fp8Checkpoint.Fp8Linears(fine.Model).Where(l => l.Path.EndsWith(".self_attn.o_proj", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, oProj.Count); // 3 layers + the MTP block
        foreach (var (path, linear) in Fp8Checkpoint.Fp8Linears(fine.Model))
            Assert.Equal(path.EndsWith(".self_attn.o_proj", StringComparison.Ordinal), linear.Fp8E5M6InputCache);
        Assert.All(Fp8Checkpoint.Fp8Linears(plain.Model), l => Assert.False(l.Linear.Fp8E5M6InputCache));

        Assert.Equal(plain.Loss, fine.Loss); // the forward GEMMs read E4M3 either way
        foreach (var (name, g) in plain.Grads)
        {
            bool changes = name.EndsWith(".self_attn.o_proj.weight", StringComparison.Ordinal);
            Assert.True(changes != g.SequenceEqual(fine.Grads[name]), $"{name}: {(changes ? "unchanged" : "changed")}");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void GroupedFp8ExpertsGiveTheModulePathsLossAndEveryGradientBitForBit(bool swigluCache)
    {
        // v3-tiny: 2 MoE layers + the MTP block's, 8 routed experts top-2, every 128 tile a partial one. The weight
        // update of a step is a function of these gradients alone, so equal gradients are an equal step.
        long calls = GroupedFp8ExpertsOp.Calls;
        var module = Step(e5m6: true, groupedExperts: false, swigluCache);
        Assert.Equal(calls, GroupedFp8ExpertsOp.Calls);
        var grouped = Step(e5m6: true, groupedExperts: true, swigluCache);
        int moeLayers = grouped.Model.NamedModules().Select(m => m.Module).OfType<Moe>().Count();
        Assert.Equal(3, moeLayers);
        Assert.Equal(calls + moeLayers, GroupedFp8ExpertsOp.Calls);

        Assert.Equal(module.Loss, grouped.Loss);
        Assert.Equal(module.Grads.Keys.Order(), grouped.Grads.Keys.Order());
        Assert.Contains(module.Grads.Keys, name => name.Contains(".mlp.experts.", StringComparison.Ordinal));
        foreach (var (name, g) in module.Grads) Assert.True(g.SequenceEqual(grouped.Grads[name]), $"{name} differs");
    }
}
