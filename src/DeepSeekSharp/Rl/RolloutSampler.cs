using DeepSeekSharp.Inference;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Rl;

/// <summary>
/// One sampled completion: which prompt, its tokens and each token's log-probability under the sampler. A completion
/// that ended on a stop token (FinishReason "stop") includes it as its last token: the policy is trained to stop too.
/// </summary>
public sealed record Rollout(int Prompt, int[] Completion, float[] LogProbs, string FinishReason)
{
    /// <summary>The completion without its stop token (what the reward functions read).</summary>
    public ReadOnlySpan<int> Text => FinishReason == "stop" ? Completion.AsSpan(0, Completion.Length - 1) : Completion;
}

/// <summary>
/// GRPO's rollouts: G completions of every prompt, sampled together on the latent-cache decoder (one forward per step
/// for every unfinished sequence, so projections and experts run as GEMMs over all of them and the head only over
/// their last rows). Sampling is softmax(z/τ) restricted by top-p (and top-k); the recorded log-probability of a token is
/// log softmax(z/τ) over the whole vocabulary, as the training forward computes it (TRL's convention: the nucleus
/// truncation is not part of the policy's probability). Each sequence draws from its own generator seeded by
/// (seed, sequence), so a step's rollouts are the same whatever the batching.
/// </summary>
public static class RolloutSampler
{
    public static Rollout[] Generate(CachedDecoder decoder, IReadOnlyList<int[]> prompts, int generations, int maxCompletionLength,
        IReadOnlyCollection<int> stopTokens, SamplingOptions sampling, int seed, int? usableVocab = null, CancellationToken ct = default)
    {
        sampling.Validate();
        if (sampling.Temperature <= 0) throw new DeepSeekSharpException("GRPO samples its rollouts: temperature must be > 0");
        if (maxCompletionLength < 1) throw new DeepSeekSharpException($"max_completion_length must be at least 1 (got {maxCompletionLength})");
        int vocab = decoder.Model.Config.VocabSize, context = decoder.Model.Config.MaxPositionEmbeddings;
        int usable = Math.Min(vocab, usableVocab ?? vocab);
        int n = prompts.Count * generations;
        var outputs = new List<int>[n];
        var logProbs = new List<float>[n];
        var limits = new int[n];
        var feed = new int[n][];
        var caches = new LatentKvCache[n];
        var samplers = new Sampler[n];
        var results = new Rollout[n];
        var active = new List<int>(n);
        for (int i = 0; i < n; i++)
        {
            int[] prompt = prompts[i / generations];
            if (prompt.Length == 0) throw new DeepSeekSharpException($"prompt {i / generations + 1} is empty");
            if (prompt.Length >= context) throw new DeepSeekSharpException($"prompt {i / generations + 1} ({prompt.Length} tokens) leaves no room in the model's context of {context}");
            (outputs[i], logProbs[i], feed[i], caches[i]) = ([], [], prompt, decoder.NewCache());
            limits[i] = Math.Min(maxCompletionLength, context - prompt.Length + 1);
            samplers[i] = new Sampler(sampling with { Seed = StreamSeed(seed, i) });
            active.Add(i);
        }
        float[] scaled = new float[vocab], weights = new float[vocab];
        bool plain = sampling.TopP >= 1f && sampling.TopK == 0 && sampling.RepetitionPenalty == 1f;
        while (active.Count > 0)
        {
            ct.ThrowIfCancellationRequested();
            var still = new List<int>(active.Count);
            using (TensorScope.Begin())
            {
                Tensor logits = decoder.ForwardLastLogits(active.Select(i => (feed[i], caches[i])).ToList());   // [sequences, V]
                for (int a = 0; a < active.Count; a++)
                {
                    int i = active[a];
                    var row = logits.Span.Slice(a * vocab, vocab);
                    // exp(z/τ − max) over the whole vocabulary: the token's log-probability, and with plain temperature
                    // sampling (no top-p/top-k) the sampling weights too, in one vectorised pass without allocation.
                    System.Numerics.Tensors.TensorPrimitives.Multiply(row, 1f / sampling.Temperature, scaled);
                    float max = System.Numerics.Tensors.TensorPrimitives.Max(scaled);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(scaled, max, scaled);
                    double total = SumExp(scaled, weights);
                    float logSum = (float)Math.Log(total);
                    int token = !plain ? samplers[i].Sample(samplers[i].Distribution(row, outputs[i], usable))
                        : Draw(weights.AsSpan(0, usable), usable == vocab ? total : Sum(weights.AsSpan(0, usable)), samplers[i].NextUniform());
                    float logp = scaled[token] - logSum;
                    outputs[i].Add(token);
                    logProbs[i].Add(logp);
                    if (stopTokens.Contains(token)) { Finish(i, "stop"); continue; }
                    if (outputs[i].Count >= limits[i]) { Finish(i, "length"); continue; }
                    feed[i] = [token];
                    still.Add(i);
                }
            }
            active = still;
        }
        return results;

        void Finish(int i, string reason) => results[i] = new Rollout(i / generations, [.. outputs[i]], [.. logProbs[i]], reason);
    }

    /// <summary>
    /// A seed for stream <paramref name="index"/> of run seed <paramref name="seed"/>: SplitMix64's finaliser of the
    /// pair, the same in every process (unlike <see cref="HashCode"/>, which is randomised per process).
    /// </summary>
    public static int StreamSeed(int seed, int index)
    {
        ulong z = ((ulong)(uint)seed << 32 | (uint)index) + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }

    /// <summary>weights = exp(x); returns their sum (in double: 129K terms).</summary>
    private static double SumExp(ReadOnlySpan<float> x, Span<float> weights)
    {
        var w = weights[..x.Length];
        System.Numerics.Tensors.TensorPrimitives.Exp(x, w);
        return Sum(w);
    }

    private static double Sum(ReadOnlySpan<float> x)
    {
        double sum = 0;
        foreach (float v in x) sum += v;
        return sum;
    }

    /// <summary>The index where the running sum of <paramref name="weights"/> passes u·<paramref name="total"/> (inverse-CDF sampling).</summary>
    private static int Draw(ReadOnlySpan<float> weights, double total, double u)
    {
        double target = u * total, run = 0;
        for (int i = 0; i < weights.Length; i++)
            if ((run += weights[i]) > target) return i;
        for (int i = weights.Length - 1; i >= 0; i--) if (weights[i] > 0) return i;
        return 0;
    }
}
