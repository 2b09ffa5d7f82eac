using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training;

/// <summary>The loss terms of one forward: total (what backward starts from) and its parts for logging.</summary>
public sealed record LossResult(Tensor Total, float MainLoss, float[] MtpLosses);

/// <summary>
/// L = CE_main + (λ/D) · Σ_k CE_k (training.md, MTP): next-token cross-entropy over the rows with a target, and for
/// depth k the cross-entropy of predicting label_{i+k+1}, over the rows where it exists inside the row's document.
/// Each term is a sum over its rows divided by a count: by default the rows of this call (a mean); in training the
/// trained targets of the whole global batch, so the micro-batches of a step add up to the global batch's mean however
/// the trained tokens fall among them (training.md, loss normalisation).
/// </summary>
public static class LanguageModelLoss
{
    /// <param name="tokens">[B·T] input ids</param>
    /// <param name="mtpWeight">λ; the MTP depths actually run are <paramref name="mtpDepth"/> (D)</param>
    /// <param name="labels">[B·T] labels aligned with the inputs (HF's convention: −100 where a position carries no
    /// loss); null: the tokens themselves (pre-training)</param>
    /// <param name="divisors">per depth (0 = main head), what its summed loss is divided by (<see cref="CountTargets"/>
    /// summed over the global batch); null: this call's own counts</param>
    public static LossResult Compute(DeepSeekModel model, int[] tokens, SequenceBatch batch, float mtpWeight, int mtpDepth,
        int[]? labels = null, long[]? divisors = null)
    {
        if (mtpWeight <= 0) mtpDepth = 0;
        labels ??= tokens;
        var (hidden, mtpHidden) = model.ForwardHidden(tokens, batch, mtpDepth);
        Tensor main = HeadLoss(model.LmHead, hidden, DeepSeekModel.Targets(labels, batch, 0), divisors?[0]);
        if (mtpDepth == 0) return new LossResult(main, main.Data[0], []);
        var terms = new Tensor[mtpDepth + 1];
        var weights = new float[mtpDepth + 1];
        var parts = new float[mtpDepth];
        terms[0] = main;
        weights[0] = 1f;
        for (int k = 1; k <= mtpDepth; k++)
        {
            terms[k] = HeadLoss(model.LmHead, mtpHidden[k - 1], DeepSeekModel.Targets(labels, batch, k), divisors?[k]);
            weights[k] = mtpWeight / mtpDepth;
            parts[k - 1] = terms[k].Data[0];
        }
        return new LossResult(Functional.WeightedSum(terms, weights), main.Data[0], parts);
    }

    /// <summary>How many rows have a target at each depth 0..<paramref name="mtpDepth"/> (the divisors of a global batch are their sums).</summary>
    public static long[] CountTargets(int[] labels, SequenceBatch batch, int mtpDepth)
    {
        var counts = new long[mtpDepth + 1];
        for (int k = 0; k <= mtpDepth; k++)
            foreach (int t in DeepSeekModel.Targets(labels, batch, k))
                if (t >= 0) counts[k]++;
        return counts;
    }

    /// <summary>
    /// Cross-entropy of the output head over <paramref name="hidden"/>: blockwise (no [rows, V] logits in memory) for a
    /// plain fp32 or BF16 head; through the head's own forward when it carries an adapter or a compressed weight.
    /// </summary>
    public static Tensor HeadLoss(Linear head, Tensor hidden, int[] targets, long? divisor = null)
    {
        if (head.Adapter is not null || head.InferenceWeight is not null || head.Fp8Compute)
            return Functional.CrossEntropy(head.Forward(hidden), targets, divisor);
        var weight = head.Bf16Compute ? Functional.RoundBf16(head.Weight) : head.Weight;
        return Functional.LinearCrossEntropy(hidden, weight, targets, divisor);
    }
}
