using DeepSeekSharp.Autograd;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>The absorbed-MLA cached path against full recomputation with the training-form model.</summary>
public class CachedDecoderTests
{
    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static float[] FullLogitsLast(DeepSeekModel m, List<int> tokens)
    {
        using var _ = GradMode.NoGrad();
        var o = m.Forward(tokens.ToArray(), SequenceBatch.Training(1, tokens.Count));
        int v = m.Config.VocabSize;
        return o.Logits.Span.Slice((tokens.Count - 1) * v, v).ToArray();
    }

    [Theory]
    [InlineData("v3-tiny")]
    [InlineData("v2-lite-tiny")]
    [InlineData("v2-group-tiny")]
    public void GreedyCachedDecodingEqualsFullRecomputeEveryStep(string fixture)
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture(fixture));
        var decoder = new CachedDecoder(model);
        var rng = new Random(4);
        // 20 prompt tokens: past YaRN's original length (16) for the v3/v2-lite fixtures.
        var tokens = Enumerable.Range(0, 20).Select(_ => rng.Next(model.Config.VocabSize)).ToList();
        var cache = decoder.NewCache();
        var (logits, _) = decoder.Forward([(tokens.ToArray(), cache)]);
        int v = model.Config.VocabSize;
        // Prefill logits equal the training form's at every position.
        using (GradMode.NoGrad())
        {
            var full = model.Forward(tokens.ToArray(), SequenceBatch.Training(1, tokens.Count)).Logits.Span;
            for (int i = 0; i < full.Length; i++) Assert.True(Math.Abs(full[i] - logits.Span[i]) < 1e-4, $"prefill logit {i}");
        }
        int next = ArgMax(logits.Span.Slice((tokens.Count - 1) * v, v));
        for (int step = 0; step < 12; step++)
        {
            Assert.Equal(ArgMax(FullLogitsLast(model, tokens)), next);
            tokens.Add(next);
            var (l, _) = decoder.Forward([(new[] { next }, cache)]);
            next = ArgMax(l.Span);
        }
        Assert.Equal(tokens.Count, cache.Length);
    }

    [Fact]
    public void BatchedPromptsOfDifferentLengthsMatchSeparateRuns()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var decoder = new CachedDecoder(model);
        int[] a = [5, 9, 2, 7, 1, 3], b = [11, 4];
        var (joint, _) = decoder.Forward([(a, decoder.NewCache()), (b, decoder.NewCache())]);
        var (sa, _) = decoder.Forward([(a, decoder.NewCache())]);
        var (sb, _) = decoder.Forward([(b, decoder.NewCache())]);
        var expected = sa.Span.ToArray().Concat(sb.Span.ToArray()).ToArray();
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - joint.Span[i]) < 1e-4);
    }

    [Fact]
    public void ForkedCacheDecodesExactlyLikeItsSource()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var decoder = new CachedDecoder(model);
        int[] prompt = [5, 9, 2, 7, 1, 3, 8];
        var source = decoder.NewCache();
        decoder.Forward([(prompt, source)]);
        var fork = source.Fork(extra: 4);
        Assert.Equal(prompt.Length, fork.Length);
        // The same next token through the source and through its copy: bitwise the same logits (one row each, same kernels).
        var viaSource = decoder.Forward([(new[] { 4 }, source)]).Logits.Span.ToArray();
        var viaFork = decoder.Forward([(new[] { 4 }, fork)]).Logits.Span.ToArray();
        Assert.Equal(viaSource, viaFork);
        // Writing into the fork left the source's rows alone: another token through the source still matches a fresh prefill.
        var fresh = decoder.NewCache();
        decoder.Forward([(prompt, fresh)]);
        var again = decoder.Forward([(new[] { 6 }, fresh)]).Logits.Span.ToArray();
        source.Truncate(prompt.Length);
        Assert.Equal(again, decoder.Forward([(new[] { 6 }, source)]).Logits.Span.ToArray());
    }

    [Fact]
    public void DecodeStepOverManySequencesMatchesTheTrainingForm()
    {
        // Nine sequences in one decode step: the attention's per-head products run as GEMMs over all rows (more than
        // four), the per-row part against each row's own cache of its own length.
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var decoder = new CachedDecoder(model);
        var rng = new Random(7);
        int v = model.Config.VocabSize;
        var sequences = Enumerable.Range(0, 9).Select(i => Enumerable.Range(0, 3 + i).Select(_ => rng.Next(v)).ToList()).ToList();
        var caches = sequences.Select(_ => decoder.NewCache()).ToList();
        decoder.Forward(sequences.Select((s, i) => (s.ToArray(), caches[i])).ToList());
        var next = sequences.Select(_ => rng.Next(v)).ToArray();
        var logits = decoder.ForwardLastLogits(sequences.Select((s, i) => (new[] { next[i] }, caches[i])).ToList()).Span.ToArray();
        for (int i = 0; i < sequences.Count; i++)
        {
            sequences[i].Add(next[i]);
            var want = FullLogitsLast(model, sequences[i]);
            for (int j = 0; j < v; j++) Assert.True(Math.Abs(want[j] - logits[i * v + j]) < 1e-4, $"sequence {i}, logit {j}");
        }
    }

    [Fact]
    public void RowsWithManyKeysTakeTheGemmPathAndMatchTheTrainingForm()
    {
        // 16 heads × 64 latent dimensions: from about 256 visible keys a row's scores and context go through the GEMM
        // (DeepSeek-V3's shapes always do); the rows before that take the vector loops. Both against the training form.
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        (node["num_attention_heads"], node["num_key_value_heads"], node["kv_lora_rank"], node["num_hidden_layers"]) = (16, 16, 64, 2);
        node["max_position_embeddings"] = 320;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(model, 5);
        var decoder = new CachedDecoder(model);
        var rng = new Random(3);
        int v = model.Config.VocabSize;
        var tokens = Enumerable.Range(0, 300).Select(_ => rng.Next(v)).ToList();
        var cache = decoder.NewCache();
        var prefill = decoder.Forward([(tokens.ToArray(), cache)]).Logits.Span.ToArray();
        using (GradMode.NoGrad())
        {
            var full = model.Forward(tokens.ToArray(), SequenceBatch.Training(1, tokens.Count)).Logits.Span;
            for (int i = 0; i < full.Length; i++) Assert.True(Math.Abs(full[i] - prefill[i]) < 1e-4, $"prefill logit {i}");
        }
        tokens.Add(7);
        var step = decoder.Forward([(new[] { 7 }, cache)]).Logits.Span.ToArray();
        var want = FullLogitsLast(model, tokens);
        for (int j = 0; j < v; j++) Assert.True(Math.Abs(want[j] - step[j]) < 1e-4, $"decode logit {j}");
    }

    [Fact]
    public void MtpDraftLogitsEqualTheTrainingFormMtpLogits()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var decoder = new CachedDecoder(model);
        int[] t = [3, 8, 1, 9, 4, 6, 2, 7];
        ModelOutput full;
        using (GradMode.NoGrad()) full = model.Forward(t, SequenceBatch.Training(1, t.Length), 1);
        var (_, hidden) = decoder.Forward([(t, decoder.NewCache())]);
        // Row i combines embed(t_{i+1}) with h_i, for i = 0..T-2.
        var h = DeepSeekSharp.Tensors.Tensor.FromArray(hidden.Span[..((t.Length - 1) * model.Config.HiddenSize)].ToArray(), t.Length - 1, model.Config.HiddenSize);
        var mtp = decoder.MtpForward(t[1..], h, decoder.NewMtpCache());
        var want = full.MtpLogits[0].Span[..mtp.Span.Length];
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - mtp.Span[i]) < 1e-4, $"mtp logit {i}");
    }

    [Fact]
    public void LatentCacheIsFarSmallerThanMultiHeadAttention()
    {
        var model = ModelCheckpoint.LoadMeta(Path.Combine(TestPaths.RepoRoot, "configs", "models", "deepseek-v3"));
        var decoder = new CachedDecoder(model);
        var cache = decoder.NewCache();
        Assert.Equal(61L * (512 + 64) * 4, cache.BytesPerToken);
        Assert.True(decoder.MhaBytesPerToken > 50 * cache.BytesPerToken);
    }
}
