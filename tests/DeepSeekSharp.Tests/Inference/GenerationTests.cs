using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.Inference;

public class GenerationTests
{
    private static readonly Lazy<DeepSeekModel> Model = new(() => ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")));

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void SpeculativeGreedyEqualsPlainGreedy(int seed)
    {
        var gen = new TextGenerator(new CachedDecoder(Model.Value), null);
        var rng = new Random(seed);
        int[] prompt = Enumerable.Range(0, 5 + seed * 4).Select(_ => rng.Next(128)).ToArray();
        var plain = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 30 });
        var spec = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 30, SpeculativeMtp = true });
        Assert.Equal(plain.Tokens, spec.Tokens);
        Assert.Equal(30, spec.Tokens.Length);
        Assert.True(spec.DraftedTokens > 0);
    }

    [Fact]
    public void SpeculativeSamplingKeepsTheModelsDistribution()
    {
        // Exact distribution of the second generated token under plain sampling, by enumerating the first token.
        var decoder = new CachedDecoder(Model.Value);
        var gen = new TextGenerator(decoder, null);
        int[] prompt = [7, 3, 9, 1];
        var sampling = new SamplingOptions { Temperature = 0.8f };
        var dist = new Sampler(sampling);
        var (l0, _) = decoder.Forward([(prompt, decoder.NewCache())]);
        var p1 = dist.Distribution(l0.Span.Slice((prompt.Length - 1) * 128, 128), prompt, 128);
        var exact = new double[128];
        for (int t1 = 0; t1 < 128; t1++)
        {
            if (p1[t1] < 1e-6) continue;
            int[] ctx = [.. prompt, t1];
            var (l1, _) = decoder.Forward([(ctx, decoder.NewCache())]);
            var p2 = dist.Distribution(l1.Span.Slice((ctx.Length - 1) * 128, 128), ctx, 128);
            for (int t2 = 0; t2 < 128; t2++) exact[t2] += p1[t1] * p2[t2];
        }
        const int n = 2000;
        var spec = new double[128];
        int accepted = 0, drafted = 0;
        for (int i = 0; i < n; i++)
        {
            var s = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 2, Sampling = sampling with { Seed = i }, SpeculativeMtp = true });
            spec[s.Tokens[1]] += 1.0 / n;
            accepted += s.AcceptedDraftTokens;
            drafted += s.DraftedTokens;
        }
        double tv = 0.5 * exact.Zip(spec, (a, b) => Math.Abs(a - b)).Sum();
        // Sampling noise alone gives about 0.5·Σ sqrt(2p/(πn)); allow twice that.
        double noise = 0.5 * exact.Sum(p => Math.Sqrt(2 * p * (1 - p) / (Math.PI * n)));
        Assert.True(tv < 2 * noise + 0.01, $"total variation {tv:F3} vs sampling noise {noise:F3}");
        Assert.True(accepted > 0 && accepted < drafted, $"accepted {accepted} of {drafted}: both branches exercised");
    }

    [Fact]
    public void StopTokensAndLimits()
    {
        var gen = new TextGenerator(new CachedDecoder(Model.Value), null);
        int[] prompt = [1, 2, 3];
        var first = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 10 });
        var stopped = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 10, StopTokens = [first.Tokens[3]] });
        Assert.Equal(first.Tokens[..3], stopped.Tokens);
        Assert.Equal("stop", stopped.FinishReason);
        Assert.Equal("length", first.FinishReason);
        Assert.Throws<DeepSeekSharpException>(() => gen.Generate(Enumerable.Repeat(1, 60).ToArray(), new GenerationOptions { MaxNewTokens = 10 }));
        Assert.Throws<DeepSeekSharpException>(() => gen.Generate([1, 999], new GenerationOptions { MaxNewTokens = 2 }));
        Assert.Throws<DeepSeekSharpException>(() => gen.Generate([1], new GenerationOptions { Sampling = new SamplingOptions { TopP = 0 } }));
    }

    [Fact]
    public void TopKOneIsGreedy()
    {
        var gen = new TextGenerator(new CachedDecoder(Model.Value), null);
        int[] prompt = [4, 4, 2];
        var greedy = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 8 });
        var topk = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 8, Sampling = new SamplingOptions { Temperature = 1f, TopK = 1, Seed = 3 } });
        Assert.Equal(greedy.Tokens, topk.Tokens);
    }
}
