using System.Buffers;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

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
/// GRPO's rollouts: G completions of every prompt, sampled together on the latent-cache decoder. Each prompt is encoded
/// once and its latent cache copied to its G completions (<see cref="LatentKvCache.Fork"/>); their first tokens are drawn
/// from the prompt's logits. Then one forward per step takes the next token of every unfinished sequence, so each
/// projection is one GEMM over all of them, the experts are grouped GEMMs, the attention reads each row's own cache
/// (<see cref="AbsorbedMlaAttention"/>) and the head runs only over their last rows; a finished sequence leaves the batch.
/// Sampling is softmax(z/τ) restricted by top-p (and top-k); the recorded log-probability of a token is log softmax(z/τ)
/// over the whole vocabulary, as the training forward computes it (TRL's convention: the nucleus truncation is not part
/// of the policy's probability). Each sequence draws from its own generator seeded by (seed, sequence), so a step's
/// rollouts are the same whatever the batching; the rows of a step are sampled concurrently.
/// </summary>
public static class RolloutSampler
{
    public static Rollout[] Generate(CachedDecoder decoder, IReadOnlyList<int[]> prompts, int generations, int maxCompletionLength,
        IReadOnlyCollection<int> stopTokens, SamplingOptions sampling, int seed, int? usableVocab = null, CancellationToken ct = default)
    {
        sampling.Validate();
        if (sampling.Temperature <= 0) throw new DeepSeekSharpException("GRPO samples its rollouts: temperature must be > 0");
        if (maxCompletionLength < 1) throw new DeepSeekSharpException($"max_completion_length must be at least 1 (got {maxCompletionLength})");
        if (generations < 1) throw new DeepSeekSharpException($"num_generations must be at least 1 (got {generations})");
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
        for (int j = 0; j < prompts.Count; j++)
        {
            int[] prompt = prompts[j];
            if (prompt.Length == 0) throw new DeepSeekSharpException($"prompt {j + 1} is empty");
            if (prompt.Length >= context) throw new DeepSeekSharpException($"prompt {j + 1} ({prompt.Length} tokens) leaves no room in the model's context of {context}");
        }
        for (int i = 0; i < n; i++)
        {
            (outputs[i], logProbs[i], feed[i]) = ([], [], new int[1]);
            limits[i] = Math.Min(maxCompletionLength, context - prompts[i / generations].Length + 1);
            samplers[i] = new Sampler(sampling with { Seed = StreamSeed(seed, i) });
        }
        var row = new SampleRow(sampling, vocab, usable);
        var tokens = new int[n];
        var rowLogProbs = new float[n];
        var active = new List<int>(n);
        var batch = new List<(int[] Tokens, LatentKvCache Cache)>(n);

        // Prefill: every prompt once; its last row's logits give the first token of each of its G completions.
        var promptCaches = new LatentKvCache[prompts.Count];
        for (int j = 0; j < prompts.Count; j++) batch.Add((prompts[j], promptCaches[j] = decoder.NewCache()));
        for (int i = 0; i < n; i++) active.Add(i);
        using (TensorScope.Begin())
        {
            Tensor logits = decoder.ForwardLastLogits(batch);                                   // [prompts, V]
            logits.Backend.RunConcurrently(n, a => (tokens[a], rowLogProbs[a]) =
                row.Draw(logits.Span.Slice(a / generations * vocab, vocab), samplers[a], outputs[a]));
        }
        Record();
        for (int a = 0; a < active.Count; a++) caches[active[a]] = promptCaches[active[a] / generations].Fork(limits[active[a]]);

        while (active.Count > 0)
        {
            ct.ThrowIfCancellationRequested();
            batch.Clear();
            foreach (int i in active) batch.Add((feed[i], caches[i]));
            using (TensorScope.Begin())
            {
                Tensor logits = decoder.ForwardLastLogits(batch);                               // [sequences, V]
                logits.Backend.RunConcurrently(active.Count, a => (tokens[a], rowLogProbs[a]) =
                    row.Draw(logits.Span.Slice(a * vocab, vocab), samplers[active[a]], outputs[active[a]]));
            }
            Record();
        }
        return results;

        // Appends each active sequence's drawn token; keeps in `active` (in order) those that go on.
        void Record()
        {
            int kept = 0;
            for (int a = 0; a < active.Count; a++)
            {
                int i = active[a], token = tokens[a];
                outputs[i].Add(token);
                logProbs[i].Add(rowLogProbs[a]);
                if (stopTokens.Contains(token)) results[i] = Finish(i, "stop");
                else if (outputs[i].Count >= limits[i]) results[i] = Finish(i, "length");
                else
                {
                    feed[i][0] = token;
                    active[kept++] = i;
                }
            }
            active.RemoveRange(kept, active.Count - kept);
        }

        Rollout Finish(int i, string reason)
        {
            caches[i] = null!;                                                                 // its memory can go now
            return new Rollout(i / generations, [.. outputs[i]], [.. logProbs[i]], reason);
        }
    }

    /// <summary>Draws one token from a row of logits; thread-safe (scratch rented per call, the generator is the row's own).</summary>
    private sealed class SampleRow(SamplingOptions sampling, int vocab, int usable)
    {
        private readonly bool _plain = sampling.TopP >= 1f && sampling.TopK == 0 && sampling.RepetitionPenalty == 1f;

        public (int Token, float LogProb) Draw(ReadOnlySpan<float> logits, Sampler sampler, List<int> history)
        {
            float[] scaled = ArrayPool<float>.Shared.Rent(vocab), weights = ArrayPool<float>.Shared.Rent(vocab);
            try
            {
                var z = scaled.AsSpan(0, vocab);
                var w = weights.AsSpan(0, vocab);
                // exp(z/τ − max) over the whole vocabulary: the token's log-probability, and with plain temperature
                // sampling (no top-p/top-k) the sampling weights too, in one vectorised pass without allocation.
                TensorPrimitives.Multiply(logits, 1f / sampling.Temperature, z);
                float max = TensorPrimitives.Max(z);
                TensorPrimitives.Subtract(z, max, z);
                TensorPrimitives.Exp(z, w);
                double total = Sum(w);
                int token = !_plain ? sampler.Sample(sampler.Distribution(logits, history, usable))
                    : InverseCdf(w[..usable], usable == vocab ? total : Sum(w[..usable]), sampler.NextUniform());
                return (token, z[token] - (float)Math.Log(total));
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scaled);
                ArrayPool<float>.Shared.Return(weights);
            }
        }
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

    /// <summary>Floats summed in float (vectorised) before the running total takes them in double (a 129K vocabulary).</summary>
    private const int SumBlock = 256;

    private static double Sum(ReadOnlySpan<float> x)
    {
        double sum = 0;
        for (int i = 0; i < x.Length; i += SumBlock) sum += TensorPrimitives.Sum(x.Slice(i, Math.Min(SumBlock, x.Length - i)));
        return sum;
    }

    /// <summary>
    /// The index where the running sum of <paramref name="weights"/> passes u·<paramref name="total"/> (inverse-CDF
    /// sampling): block sums (as <see cref="Sum"/> forms them) find the block, then one scan inside it.
    /// </summary>
    private static int InverseCdf(ReadOnlySpan<float> weights, double total, double u)
    {
        double target = u * total, run = 0;
        for (int i = 0; i < weights.Length; i += SumBlock)
        {
            var block = weights.Slice(i, Math.Min(SumBlock, weights.Length - i));
            double blockSum = TensorPrimitives.Sum(block);
            if (run + blockSum > target)
            {
                for (int j = 0; j < block.Length; j++)
                    if ((run += block[j]) > target) return i + j;
                // The element-wise sum fell short of the block's by rounding: its last drawable token.
                for (int j = block.Length - 1; j >= 0; j--) if (block[j] > 0) return i + j;
            }
            run += blockSum;
        }
        for (int i = weights.Length - 1; i >= 0; i--) if (weights[i] > 0) return i;
        return 0;
    }
}
