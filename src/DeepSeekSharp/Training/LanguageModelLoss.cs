using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training;

/// <summary>The loss terms of one forward: total (what backward starts from) and its parts for logging.</summary>
public sealed record LossResult(Tensor Total, float MainLoss, float[] MtpLosses, ModelOutput Output);

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
        var output = model.Forward(tokens, batch, mtpDepth);
        Tensor main = Functional.CrossEntropy(output.Logits, DeepSeekModel.Targets(tokens, batch, 0));
        if (mtpDepth == 0) return new LossResult(main, main.Data[0], [], output);
        var terms = new Tensor[mtpDepth + 1];
        var weights = new float[mtpDepth + 1];
        var parts = new float[mtpDepth];
        terms[0] = main;
        weights[0] = 1f;
        for (int k = 1; k <= mtpDepth; k++)
        {
            terms[k] = Functional.CrossEntropy(output.MtpLogits[k - 1], DeepSeekModel.Targets(tokens, batch, k));
            weights[k] = mtpWeight / mtpDepth;
            parts[k - 1] = terms[k].Data[0];
        }
        return new LossResult(Functional.WeightedSum(terms, weights), main.Data[0], parts, output);
    }
}
