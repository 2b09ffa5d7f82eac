using DeepSeekSharp.Autograd;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Autograd;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Tensors;

/// <summary>
/// Tests that switch <see cref="StoragePool.CheckingMode"/> on, or read which arrays the process's pool holds, run
/// alone: the mode and the pool are process-wide, and a test that passes beside them must not depend on what they lend.
/// </summary>
[CollectionDefinition(nameof(PoolCheckingCollection), DisableParallelization = true)]
public sealed class PoolCheckingCollection;

/// <summary>
/// Every op's finite-difference check again, with every pooled array longer than its tensor and full of NaN and every
/// returned array poisoned: an op that sizes its work by a gradient buffer instead of its tensor (RMSNorm's weight
/// gradient once did, a flaky <c>ArgumentException</c> depending on which arrays happened to be idle), reads values it
/// never wrote, or reads storage after giving it back fails here every time.
/// </summary>
[Collection(nameof(PoolCheckingCollection))]
public sealed class OpGradientTestsWithPoisonedPool : OpGradientTests, IDisposable
{
    public OpGradientTestsWithPoisonedPool() => StoragePool.CheckingMode = true;

    public void Dispose() => StoragePool.CheckingMode = false;

    [Fact]
    public void RmsNormWeightThatIsNotAParameterGetsAGradientOfItsOwnLength()
    {
        var rng = new Random(11);
        var x = GradCheck.Random(rng, 1, 3, 16); var w = GradCheck.Random(rng, 1, 16);
        Backprop.Backward(Functional.CrossEntropy(Functional.RmsNorm(x, w, 1e-6f), [0, 5, 15]));
        Assert.True(w.Grad!.Length > w.Length, "the checking pool lends longer arrays");
        Assert.All(w.Grad.AsSpan(0, 16).ToArray(), g => Assert.True(float.IsFinite(g)));
    }
}

/// <summary>
/// A whole training step, an inference forward and cached decoding (prefill, then one token at a time) through the
/// poisoned pool compute what they compute normally: storage returned to the pool is filled with NaN, so any value
/// read after its tensor was released would change a loss, a gradient or a logit.
/// </summary>
[Collection(nameof(PoolCheckingCollection))]
public sealed class ModelStepWithPoisonedPoolTests
{
    private static (float Loss, Dictionary<string, float[]> Grads, float[] Logits, float[] Decoded) Run(string precision)
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        DeepSeekSharp.Fp8.Fp8Training.Apply(model, precision);
        model.RecomputeNorms(true);
        model.RecomputeMlaUpProjections(true);
        int[] tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3];
        var batch = SequenceBatch.Training(2, 8);
        model.ZeroGrad();
        var loss = LanguageModelLoss.Compute(model, tokens, batch, 0.3f, 1);
        Backprop.Backward(loss.Total, freeActivations: true);
        var grads = model.NamedParameters().Where(p => p.Parameter.Grad is not null)
            .ToDictionary(p => p.Name, p => p.Parameter.Grad!.AsSpan(0, (int)p.Parameter.Length).ToArray());
        float[] logits;
        using (GradMode.NoGrad())
            logits = model.Forward(tokens[..8], SequenceBatch.Training(1, 8)).Logits.Span.ToArray();
        var decoder = new CachedDecoder(model);
        var cache = decoder.NewCache();
        var decoded = new List<float>(decoder.Forward([(tokens[..6], cache)]).Logits.Span.ToArray());
        for (int t = 6; t < 9; t++) decoded.AddRange(decoder.Forward([(tokens[t..(t + 1)], cache)]).Logits.Span.ToArray());
        return (loss.Total.Span[0], grads, logits, decoded.ToArray());
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("fp8")]
    public void LossGradientsAndLogitsAreBitIdentical(string precision)
    {
        var normal = Run(precision);
        StoragePool.CheckingMode = true;
        try
        {
            var poisoned = Run(precision);
            Assert.Equal(normal.Loss, poisoned.Loss);
            Assert.Equal(normal.Grads.Keys.Order(), poisoned.Grads.Keys.Order());
            foreach (var (name, g) in normal.Grads) Assert.True(g.SequenceEqual(poisoned.Grads[name]), name);
            Assert.Equal(normal.Logits, poisoned.Logits);
            Assert.All(poisoned.Decoded, v => Assert.True(float.IsFinite(v)));
            Assert.Equal(normal.Decoded, poisoned.Decoded);
        }
        finally { StoragePool.CheckingMode = false; }
    }
}
