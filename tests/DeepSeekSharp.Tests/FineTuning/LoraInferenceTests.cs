using DeepSeekSharp.Autograd;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// An adapter used unmerged for inference: the latent-cache decoder (absorbed MLA reads kv_b_proj's weight itself)
/// gives the full forward's logits and greedy tokens with LoRA on kv_b_proj, and an adapter over BF16/FP8-stored
/// weights computes what it computes over those weights widened to fp32.
/// </summary>
public sealed class LoraInferenceTests
{
    private readonly string _dir = TestPaths.TempDir();

    private static readonly int[] Tokens = [5, 8, 13, 21, 34, 55, 1, 2, 99, 3];

    private static DeepSeekModel WithKvBAdapter()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var result = LoraAdapters.Apply(model, new LoraSettings(4, 8, ["kv_b_proj"]), seed: 3);
        var rng = new Random(4);
        foreach (var lora in result.Adapters.Values)
            for (int i = 0; i < lora.B.Length; i++) lora.B.Span[i] = (float)(rng.NextDouble() * 2 - 1) * 0.3f;
        return model;
    }

    private static float[] FullLogits(DeepSeekModel model, int[] tokens)
    {
        using var _ = GradMode.NoGrad();
        return model.Forward(tokens, SequenceBatch.Training(1, tokens.Length)).Logits.Span.ToArray();
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    [Fact]
    public void CachedDecodingWithAnAdapterOnKvBProjGivesTheFullForwardsLogits()
    {
        var model = WithKvBAdapter();
        float[] full = FullLogits(model, Tokens);
        double scale = full.Max(v => Math.Abs((double)v));
        // Prefill of six tokens, then one token at a time: every row is the full forward's.
        var decoder = new CachedDecoder(model);
        var cache = decoder.NewCache();
        var cached = new List<float>(decoder.Forward([(Tokens[..6], cache)]).Logits.Span.ToArray());
        foreach (int t in Tokens[6..]) cached.AddRange(decoder.Forward([([t], cache)]).Logits.Span.ToArray());
        Assert.True(MaxDifference(full, [.. cached]) <= 1e-4 * scale, $"cached vs full: {MaxDifference(full, [.. cached])} (scale {scale})");
        // The adapter on kv_b_proj is what makes these logits: the base's differ.
        float[] plain = FullLogits(ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")), Tokens);
        Assert.True(MaxDifference(full, plain) > 1e-2 * scale, $"the adapter hardly changes the logits: {MaxDifference(full, plain)}");
    }

    [Fact]
    public void GreedyCachedDecodingWithAnAdapterOnKvBProjPicksTheFullForwardsTokens()
    {
        var model = WithKvBAdapter();
        int[] prompt = Tokens[..4];
        var generated = new TextGenerator(new CachedDecoder(model), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 12 }).Tokens;
        var sequence = prompt.ToList();
        int vocab = model.Config.VocabSize;
        for (int i = 0; i < 12; i++)
        {
            float[] logits = FullLogits(model, [.. sequence]);
            sequence.Add(Sampler.ArgMax(logits.AsSpan((sequence.Count - 1) * vocab, vocab)));
        }
        Assert.Equal(sequence.Skip(prompt.Length), generated);
    }

    [Theory]
    [InlineData(WeightStorage.Bf16)]
    [InlineData(WeightStorage.Fp8Block)]
    public void AnAdapterOverCompressedWeightsComputesWhatItDoesOverThemWidened(WeightStorage storage)
    {
        string fixture = TestPaths.Fixture("v3-tiny"), adapterDir = Path.Combine(_dir, "adapter");
        LoraMergeTests.WriteAdapter(fixture, adapterDir); // lm_head in modules_to_save: BF16 storage compresses the head too

        var compressed = ModelCheckpoint.Load(fixture);
        InferenceWeights.Compress(compressed, storage);
        float[] withoutAdapter = FullLogits(compressed, Tokens);
        var attached = LoraInference.Attach(compressed, adapterDir);
        Assert.All(compressed.NamedParameters(), p => Assert.False(p.Parameter.RequiresGrad));
        float[] actual = FullLogits(compressed, Tokens);

        // Reference: the adapter on an fp32 model whose weights are the compressed ones widened (the saved head included).
        var reference = ModelCheckpoint.Load(fixture);
        LoraAdapters.Load(reference, adapterDir);
        var selection = storage == WeightStorage.Fp8Block ? DeepSeekSharp.Fp8.Fp8Checkpoint.Fp8Linears(reference) : InferenceWeights.CompressibleLinears(reference);
        foreach (var (_, linear) in selection.Where(l => !l.Item1.EndsWith(".kv_b_proj", StringComparison.Ordinal)))
            CompressedWeight.Compress(linear.Weight.Span, linear.OutFeatures, linear.InFeatures, storage).Decompress().CopyTo(linear.Weight.Span);
        float[] expected = FullLogits(reference, Tokens);

        double scale = expected.Max(v => Math.Abs((double)v));
        Assert.Equal(attached.Adapters.Count, compressed.NamedModules().Count(m => m.Module is Linear { Adapter: not null }));
        Assert.True(MaxDifference(expected, actual) <= 1e-4 * scale, $"compressed + adapter vs widened + adapter: {MaxDifference(expected, actual)} (scale {scale})");
        Assert.True(MaxDifference(withoutAdapter, actual) > 1e-2 * scale, $"the adapter hardly changes the logits: {MaxDifference(withoutAdapter, actual)}");
    }
}
