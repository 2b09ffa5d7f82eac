using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training;

/// <summary>The loss terms of one forward: total (what backward starts from) and its parts for logging.</summary>
public sealed record LossResult(Tensor Total, float MainLoss, float[] MtpLosses);

/// <summary>
/// L = CE_main + (λ/D) · Σ_k CE_k (training.md, MTP): next-token cross-entropy averaged over positions 0..T−2, and
/// for depth k the cross-entropy of predicting t_{i+k+1}, averaged over the rows where it exists.
/// </summary>
public static class LanguageModelLoss
{
    /// <param name="mtpWeight">λ; the MTP depths actually run are <paramref name="mtpDepth"/> (D)</param>
    public static LossResult Compute(DeepSeekModel model, int[] tokens, SequenceBatch batch, float mtpWeight, int mtpDepth)
    {
        if (mtpWeight <= 0) mtpDepth = 0;
        var (hidden, mtpHidden) = model.ForwardHidden(tokens, batch, mtpDepth);
        Tensor main = HeadLoss(model.LmHead, hidden, DeepSeekModel.Targets(tokens, batch, 0));
        if (mtpDepth == 0) return new LossResult(main, main.Data[0], []);
        var terms = new Tensor[mtpDepth + 1];
        var weights = new float[mtpDepth + 1];
        var parts = new float[mtpDepth];
        terms[0] = main;
        weights[0] = 1f;
        for (int k = 1; k <= mtpDepth; k++)
        {
            terms[k] = HeadLoss(model.LmHead, mtpHidden[k - 1], DeepSeekModel.Targets(tokens, batch, k));
            weights[k] = mtpWeight / mtpDepth;
            parts[k - 1] = terms[k].Data[0];
        }
        return new LossResult(Functional.WeightedSum(terms, weights), main.Data[0], parts);
    }

    /// <summary>
    /// Cross-entropy of the output head over <paramref name="hidden"/>: blockwise (no [rows, V] logits in memory) for a
    /// plain fp32 or BF16 head; through the head's own forward when it carries an adapter or a compressed weight.
    /// </summary>
    public static Tensor HeadLoss(Linear head, Tensor hidden, int[] targets)
    {
        if (head.Adapter is not null || head.InferenceWeight is not null || head.Fp8Compute)
            return Functional.CrossEntropy(head.Forward(hidden), targets);
        var weight = head.Bf16Compute ? Functional.RoundBf16(head.Weight) : head.Weight;
        return Functional.LinearCrossEntropy(hidden, weight, targets);
    }
}
