using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Inference;

/// <summary>One prompt's greedy continuation.</summary>
/// <param name="Tokens">generated ids, without the stop token</param>
/// <param name="FinishReason">"stop" (a stop token came) or "length" (the token limit, or the model's context, was reached)</param>
public sealed record GreedyContinuation(int[] Tokens, string FinishReason);

/// <summary>
/// Greedy decoding of several prompts at once on the latent-cache decoder: one forward per step takes the next token
/// of every unfinished sequence (the first takes all the prompts, of any lengths), so the projections and experts run
/// as GEMMs over all of them instead of one row at a time, and the output head only over each sequence's last row
/// (<see cref="CachedDecoder.ForwardLastLogits"/>: no [prompt rows, V] logits). Each sequence stops on its own; the output of each is what
/// <see cref="TextGenerator"/> gives for it alone with temperature 0 (argmax, ties to the lower id).
/// </summary>
public static class BatchedGreedyDecoding
{
    /// <param name="prompts">token ids per sequence, each non-empty</param>
    /// <param name="maxNewTokens">tokens to generate at most per sequence; fewer where the model's context ends first</param>
    /// <param name="stopTokens">ids that end a sequence (not included in its output), e.g. EOS</param>
    /// <param name="usableVocab">ids below this are candidates (a tokenizer smaller than the model's vocabulary); null = all</param>
    /// <param name="onFinished">called with a sequence's index and continuation as soon as it ends</param>
    public static GreedyContinuation[] Generate(CachedDecoder decoder, IReadOnlyList<int[]> prompts, int maxNewTokens, IReadOnlyCollection<int> stopTokens,
        int? usableVocab = null, Action<int, GreedyContinuation>? onFinished = null, CancellationToken ct = default)
    {
        if (maxNewTokens < 0) throw new DeepSeekSharpException("max new tokens must be ≥ 0");
        int vocab = decoder.Model.Config.VocabSize, context = decoder.Model.Config.MaxPositionEmbeddings;
        int usable = Math.Min(vocab, usableVocab ?? vocab);
        int n = prompts.Count;
        var results = new GreedyContinuation[n];
        var outputs = new List<int>[n];
        var limits = new int[n];
        var feed = new int[n][];
        var caches = new LatentKvCache[n];
        var active = new List<int>(n);
        for (int i = 0; i < n; i++)
        {
            if (prompts[i].Length == 0) throw new DeepSeekSharpException($"prompt {i + 1} is empty");
            if (prompts[i].Length > context)
                throw new DeepSeekSharpException($"prompt {i + 1} ({prompts[i].Length} tokens) is longer than the model's context of {context}");
            outputs[i] = [];
            // The last generated token is never fed back, so prompt + limit − 1 positions are used: prompt + limit ≤ context + 1.
            limits[i] = Math.Min(maxNewTokens, context - prompts[i].Length + 1);
            feed[i] = prompts[i];
            caches[i] = decoder.NewCache();
            if (limits[i] > 0) active.Add(i);
            else Finish(i, "length");
        }
        void Finish(int i, string reason)
        {
            results[i] = new GreedyContinuation(outputs[i].ToArray(), reason);
            onFinished?.Invoke(i, results[i]);
        }
        while (active.Count > 0)
        {
            ct.ThrowIfCancellationRequested();
            var next = new int[active.Count];
            using (TensorScope.Begin())
            {
                Tensor logits = decoder.ForwardLastLogits(active.Select(i => (feed[i], caches[i])).ToList()); // [sequences, V]
                for (int a = 0; a < active.Count; a++) next[a] = Sampler.ArgMax(logits.Span.Slice(a * vocab, usable));
            }
            var still = new List<int>(active.Count);
            for (int a = 0; a < active.Count; a++)
            {
                int i = active[a], token = next[a];
                if (stopTokens.Contains(token)) { Finish(i, "stop"); continue; }
                outputs[i].Add(token);
                if (outputs[i].Count >= limits[i]) { Finish(i, "length"); continue; }
                feed[i] = [token];
                still.Add(i);
            }
            active = still;
        }
        return results;
    }
}
