using System.Diagnostics;
using System.Text;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tokenization;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Evaluation;

/// <summary>The masked loss of a model over fine-tuning examples.</summary>
/// <param name="Examples">examples evaluated</param>
/// <param name="TrainedTokens">positions whose next token carries loss (the loss's denominator)</param>
/// <param name="TotalNats">Σ −ln p(next token) over those positions</param>
/// <param name="TargetBytes">UTF-8 bytes of the trained target tokens decoded, special tokens counting none</param>
/// <param name="Elapsed">wall time of the forwards</param>
public sealed record MaskedLossResult(int Examples, long TrainedTokens, double TotalNats, long TargetBytes, TimeSpan Elapsed)
{
    /// <summary>Mean cross-entropy per trained token, in nats: what the fine-tuning loss is.</summary>
    public double Loss => TrainedTokens == 0 ? double.NaN : TotalNats / TrainedTokens;

    /// <summary>e^loss.</summary>
    public double Perplexity => Math.Exp(Loss);

    /// <summary>Total nats / ln 2 / target bytes: comparable across tokenizers, since it divides by the text, not the tokens.</summary>
    public double BitsPerByte => TargetBytes == 0 ? double.NaN : TotalNats / Math.Log(2) / TargetBytes;
}

/// <summary>
/// The loss a fine-tuning run minimises, measured without gradients: for each example, the cross-entropy of every
/// position i whose next label (HF's <c>labels[i + 1]</c>) is not <see cref="TokenizedExample.IgnoreIndex"/>, summed over
/// all examples and divided by the number of such positions (a mean per trained token, not per example). Examples of
/// equal length share one forward (a batch of B sequences); the output head runs blockwise
/// (<see cref="LanguageModelLoss.HeadLoss"/>), so no [T, V] logits are held.
/// </summary>
public static class MaskedLossEvaluator
{
    /// <summary>Rows (examples × length) one forward takes at most, unless a single example is longer.</summary>
    public const int DefaultBatchTokens = 8192;

    /// <param name="model">the loaded model (its weights are only read)</param>
    /// <param name="tokenizer">decodes the trained targets to count their bytes</param>
    /// <param name="examples">ids and labels aligned with them (<see cref="TokenizedExample.IgnoreIndex"/> = no loss)</param>
    /// <param name="batchTokens">rows per forward at most (examples of one length are batched up to it)</param>
    /// <param name="progress">told after each forward</param>
    public static MaskedLossResult Evaluate(DeepSeekModel model, ITextTokenizer tokenizer, IReadOnlyList<TokenizedExample> examples,
        int batchTokens = DefaultBatchTokens, IProgress<EvalProgress>? progress = null, CancellationToken ct = default)
    {
        if (examples.Count == 0) throw new DeepSeekSharpException("no examples to evaluate");
        if (batchTokens <= 0) throw new ArgumentOutOfRangeException(nameof(batchTokens), "must be positive");
        Check(model.Config, examples);
        var clock = Stopwatch.StartNew();
        double nats = 0;
        long trained = 0, bytes = 0;
        int done = 0;
        using (GradMode.NoGrad())
        {
            foreach (var group in Batches(examples, batchTokens))
            {
                ct.ThrowIfCancellationRequested();
                int n = group.Count, t = examples[group[0]].InputIds.Length;
                var ids = new int[n * t];     // [B·T]
                var labels = new int[n * t];  // [B·T]
                for (int b = 0; b < n; b++)
                {
                    var example = examples[group[b]];
                    example.InputIds.CopyTo(ids, b * t);
                    example.Labels.CopyTo(labels, b * t);
                    bytes += TargetBytes(tokenizer, example.Labels);
                }
                var geometry = SequenceBatch.Training(n, t);
                var targets = DeepSeekModel.Targets(labels, geometry, 0); // [B·T], −1 = no loss
                int count = targets.Count(x => x >= 0);
                if (count > 0)
                {
                    using var scope = TensorScope.Begin();
                    var (hidden, _) = model.ForwardHidden(ids, geometry); // [B·T, H]
                    // HeadLoss is the mean over rows with a target; times their count gives this batch's sum.
                    nats += (double)LanguageModelLoss.HeadLoss(model.LmHead, hidden, targets).Data[0] * count;
                }
                trained += count;
                done += n;
                progress?.Report(new EvalProgress(done, examples.Count, clock.Elapsed));
            }
        }
        return new MaskedLossResult(examples.Count, trained, nats, bytes, clock.Elapsed);
    }

    /// <summary>
    /// UTF-8 bytes of the trained targets' text: each run of consecutive trained labels decoded at once (a character
    /// split over several byte-level tokens is counted once, whole). BOS, EOS and an HF tokenizer's other special tokens
    /// are markup, not text, and count no bytes. The first label is never a target (no position predicts it).
    /// </summary>
    public static long TargetBytes(ITextTokenizer tokenizer, ReadOnlySpan<int> labels)
    {
        long bytes = 0;
        var run = new List<int>();
        for (int i = 1; i <= labels.Length; i++)
        {
            if (i < labels.Length && labels[i] != TokenizedExample.IgnoreIndex)
            {
                if (labels[i] != tokenizer.BosId && labels[i] != tokenizer.EosId) run.Add(labels[i]);
                continue;
            }
            if (run.Count == 0) continue;
            string text = tokenizer is HfTokenizer hf ? hf.Decode(run.ToArray(), skipSpecialTokens: true) : tokenizer.Decode(run.ToArray());
            bytes += Encoding.UTF8.GetByteCount(text);
            run.Clear();
        }
        return bytes;
    }

    /// <summary>Indices of examples of one length, in order of first appearance, cut so a batch holds at most <paramref name="batchTokens"/> rows (at least one example).</summary>
    internal static IEnumerable<List<int>> Batches(IReadOnlyList<TokenizedExample> examples, int batchTokens)
    {
        var byLength = new Dictionary<int, List<int>>();
        var order = new List<int>();
        for (int i = 0; i < examples.Count; i++)
        {
            int length = examples[i].InputIds.Length;
            if (!byLength.TryGetValue(length, out var list))
            {
                byLength[length] = list = [];
                order.Add(length);
            }
            list.Add(i);
        }
        foreach (int length in order)
        {
            var all = byLength[length];
            int per = Math.Max(1, batchTokens / length);
            for (int start = 0; start < all.Count; start += per) yield return all.GetRange(start, Math.Min(per, all.Count - start));
        }
    }

    private static void Check(DeepSeekConfig config, IReadOnlyList<TokenizedExample> examples)
    {
        for (int e = 0; e < examples.Count; e++)
        {
            var (ids, labels) = (examples[e].InputIds, examples[e].Labels);
            if (ids.Length == 0) throw new DeepSeekSharpException($"example {e + 1} has no tokens");
            if (labels.Length != ids.Length) throw new DeepSeekSharpException($"example {e + 1}: {labels.Length} labels for {ids.Length} tokens");
            if (ids.Length > config.MaxPositionEmbeddings)
                throw new DeepSeekSharpException($"example {e + 1}: {ids.Length} tokens exceed the model's max_position_embeddings {config.MaxPositionEmbeddings}");
            for (int i = 0; i < ids.Length; i++)
            {
                if ((uint)ids[i] >= (uint)config.VocabSize)
                    throw new DeepSeekSharpException($"example {e + 1}: token id {ids[i]} is outside the model's vocabulary [0, {config.VocabSize}) (a tokenizer for another model?)");
                if (labels[i] != TokenizedExample.IgnoreIndex && (uint)labels[i] >= (uint)config.VocabSize)
                    throw new DeepSeekSharpException($"example {e + 1}: label {labels[i]} is outside the model's vocabulary [0, {config.VocabSize})");
            }
        }
    }
}
