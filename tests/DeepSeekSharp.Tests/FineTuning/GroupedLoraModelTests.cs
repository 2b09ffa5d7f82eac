using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// A tiny MoE model with LoRA on attention and on every routed expert: the grouped expert GEMMs (adapters, dropout and
/// stored base weights inside the grouped op) give the logits, the input gradients and every adapter gradient of the
/// per-expert module path (<see cref="Moe.GroupedExperts"/> off), and lora_dropout acts only inside a training
/// micro-batch.
/// </summary>
public class GroupedLoraModelTests
{
    // 64 tokens × top-4 over 16 experts: about 16 rows per expert, so with a stored base some experts' weights are
    // widened into scratch and others (under 16 rows) read in place.
    private static readonly int[] Tokens = [.. Enumerable.Range(0, 64).Select(i => (i * 37 + 11) % 256)];

    private static (DeepSeekModel Model, LoraApplyResult Lora) Build(float dropout = 0, WeightStorage storage = WeightStorage.Fp32)
    {
        var model = TinyModels.ByteVocabulary(context: 64, seed: 3);
        var lora = LoraAdapters.Apply(model, new LoraSettings(4, 8, ["q_a_proj", "o_proj", "mlp.experts"], Dropout: dropout), seed: 1);
        // Trained-looking adapters: B random, so the low-rank paths change the outputs.
        var rng = new Random(11);
        foreach (var adapter in lora.Adapters.Values)
            for (int i = 0; i < adapter.B.Length; i++) adapter.B.Span[i] = (float)(rng.NextDouble() * 2 - 1) * 0.2f;
        if (storage != WeightStorage.Fp32)
            foreach (var (path, module) in model.NamedModules())
                if (module is Linear linear && path.Contains(".mlp.experts.", StringComparison.Ordinal))
                {
                    linear.InferenceWeight = CompressedWeight.Compress(linear.Weight.Span, linear.OutFeatures, linear.InFeatures, storage);
                    linear.Weight.Release();
                }
        return (model, lora);
    }

    private static void SetGrouped(DeepSeekModel model, bool grouped)
    {
        foreach (var moe in model.NamedModules().Select(m => m.Module).OfType<Moe>()) moe.GroupedExperts = grouped;
    }

    private static Tensor Loss(DeepSeekModel model)
    {
        var batch = SequenceBatch.Training(1, Tokens.Length);
        long[] divisors = LanguageModelLoss.CountTargets(Tokens, batch, 0);
        return LanguageModelLoss.Compute(model, Tokens, batch, 0, 0, divisors: divisors).Total;
    }

    [Theory]
    [InlineData(0f, WeightStorage.Fp32)]
    [InlineData(0.25f, WeightStorage.Fp32)]
    [InlineData(0f, WeightStorage.Fp8Block)]
    [InlineData(0.25f, WeightStorage.Bf16)]
    public void GroupedPathEqualsThePerExpertModulePath(float dropout, WeightStorage storage)
    {
        var (grouped, groupedLora) = Build(dropout, storage);
        var (reference, referenceLora) = Build(dropout, storage);
        SetGrouped(reference, false);
        long before = GroupedExpertsOp.Calls;
        Tensor loss, lossRef;
        using (groupedLora.Dropout.Begin(seed: 5, step: 2, microBatch: 1))
        {
            loss = Loss(grouped);
            Backprop.Backward(loss);
        }
        Assert.True(GroupedExpertsOp.Calls - before >= grouped.Config.MoeLayerCount, "the adapted experts should run grouped");
        using (referenceLora.Dropout.Begin(seed: 5, step: 2, microBatch: 1))
        {
            lossRef = Loss(reference);
            Backprop.Backward(lossRef);
        }
        Assert.True(Math.Abs(lossRef.Data[0] - loss.Data[0]) <= 1e-5 * Math.Abs(lossRef.Data[0]), $"loss {loss.Data[0]} vs {lossRef.Data[0]}");
        int expertAdapters = 0;
        foreach (var (path, want) in referenceLora.Adapters)
        {
            var got = groupedLora.Adapters[path];
            if (want.A.Grad is null)
            {
                // an expert no token chose: the grouped op did no work for it either
                Assert.True(got.A.Grad is null || got.A.Grad.All(v => v == 0));
                continue;
            }
            if (path.Contains(".mlp.experts.", StringComparison.Ordinal)) expertAdapters++;
            AssertClose(path + ".lora_A", want.A.Grad, got.A.Grad!);
            AssertClose(path + ".lora_B", want.B.Grad!, got.B.Grad!);
        }
        Assert.True(expertAdapters > 10, $"only {expertAdapters} expert adapters were compared");
        Assert.All(grouped.NamedParameters().Where(p => !p.Name.Contains(".lora_", StringComparison.Ordinal)), p => Assert.Null(p.Parameter.Grad));
    }

    [Fact]
    public void DropoutActsOnlyInsideATrainingMicroBatch()
    {
        var (dropped, droppedLora) = Build(dropout: 0.5f);
        var (plain, _) = Build(dropout: 0f);
        var batch = SequenceBatch.Training(1, Tokens.Length);
        float[] Logits(DeepSeekModel m)
        {
            using (GradMode.NoGrad()) return m.Forward(Tokens, batch).Logits.Span.ToArray();
        }
        // Evaluation, inference and merging run outside a micro-batch: no dropout, bit for bit the undropped model.
        Assert.Equal(Logits(plain), Logits(dropped));
        float[] first, again, nextStep;
        using (droppedLora.Dropout.Begin(seed: 1, step: 1, microBatch: 0)) first = Logits(dropped);
        using (droppedLora.Dropout.Begin(seed: 1, step: 1, microBatch: 0)) again = Logits(dropped);
        using (droppedLora.Dropout.Begin(seed: 1, step: 2, microBatch: 0)) nextStep = Logits(dropped);
        Assert.NotEqual(Logits(plain), first);
        Assert.Equal(first, again);                                      // the same micro-batch draws the same masks
        Assert.NotEqual(first, nextStep);
        Assert.Equal(Logits(plain), Logits(dropped));                    // and the scope closed again
    }

    private static void AssertClose(string what, float[] expected, float[] actual)
    {
        float scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * scale + 1e-9f, $"{what}[{i}]: {expected[i]} vs {actual[i]}");
    }
}
