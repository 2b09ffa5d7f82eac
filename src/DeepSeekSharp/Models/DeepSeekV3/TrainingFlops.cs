namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Forward FLOPs per token (2 per multiply-add of every GEMM a token touches, full causal attention averaged).</summary>
public static class TrainingFlops
{
    public static double PerToken(DeepSeekConfig c, int seqLen)
    {
        double h = c.HiddenSize, n = c.NumAttentionHeads, dq = c.QkHeadDim, dv = c.VHeadDim, dc = c.KvLoraRank, dr = c.QkRopeHeadDim;
        double attnProj = c.HasQLora ? h * c.QLoraRank!.Value + c.QLoraRank!.Value * n * dq : h * n * dq;
        attnProj += h * (dc + dr) + dc * n * (c.QkNopeHeadDim + dv) + n * dv * h;
        double attnCore = n * (dq + dv) * (seqLen + 1) / 2.0; // causal: on average half the keys
        double total = 0;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            total += attnProj + attnCore;
            if (c.IsMoeLayer(l))
                total += h * c.NRoutedExperts!.Value + 3 * h * c.MoeIntermediateSize * (c.NumExpertsPerTok!.Value + (c.NSharedExperts ?? 0));
            else total += 3 * h * c.IntermediateSize;
        }
        total += h * c.VocabSize;
        return 2 * total;
    }
}
