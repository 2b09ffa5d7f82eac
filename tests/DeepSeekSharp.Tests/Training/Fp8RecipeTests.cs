using DeepSeekSharp.Autograd;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary><c>precision: fp8</c> on a whole model: where the E5M6 o_proj input cache applies and what it changes.</summary>
public class Fp8RecipeTests
{
    private static (float Loss, Dictionary<string, float[]> Grads, DeepSeekModel Model) Step(bool e5m6)
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        Fp8Training.Apply(model, "fp8", swigluCache: true, e5m6OProjCache: e5m6);
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
}
