using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>What <c>dss inspect</c> reports: the architecture in a few numbers and the parameter counts.</summary>
public sealed record ModelSummary(
    string ModelType, int Layers, int DenseLayers, int MoeLayers, int MtpDepth, int Hidden, int Vocab, int Heads,
    string Attention, int RoutedExperts, int SharedExperts, int ExpertsPerToken, string Routing, string Rope,
    long TotalParameters, long ActivatedParameters, long MtpParameters, long MtpStoredCopies, long KvCacheValuesPerToken, long MhaCacheValuesPerToken)
{
    /// <summary>From the config alone: nothing is built or allocated per parameter, so any size is answered at once.</summary>
    public static ModelSummary Of(DeepSeekConfig c)
    {
        int moe = c.MoeLayerCount;
        var count = ParameterCount.Of(c);
        string q = c.HasQLora ? $"q_lora_rank {c.QLoraRank}" : "q_proj";
        string attention = $"MLA ({q}, kv_lora_rank {c.KvLoraRank}, nope {c.QkNopeHeadDim} + rope {c.QkRopeHeadDim}, v {c.VHeadDim})";
        string routing = !c.HasMoe ? "dense" :
            $"{c.ScoringFunc}, {c.TopkMethod}, groups {c.NGroup} keep {c.TopkGroup}, norm_topk_prob {c.NormTopkProb}, scale {c.RoutedScalingFactor?.ToString(CultureInfo.InvariantCulture)}";
        var rs = c.RopeScaling;
        string rope = YarnRope.IsYarnActiveFor(c)
            ? $"YaRN factor {rs!.Factor.ToString(CultureInfo.InvariantCulture)} from {rs.OriginalMaxPositionEmbeddings} to {c.MaxPositionEmbeddings}, theta {c.RopeTheta.ToString(CultureInfo.InvariantCulture)}"
            : $"RoPE theta {c.RopeTheta.ToString(CultureInfo.InvariantCulture)}, {c.MaxPositionEmbeddings} positions";
        return new ModelSummary(c.ModelType, c.NumHiddenLayers, c.NumHiddenLayers - moe, moe, c.NumNextnPredictLayers, c.HiddenSize,
            c.VocabSize, c.NumAttentionHeads, attention, c.NRoutedExperts ?? 0, c.NSharedExperts ?? 0, c.NumExpertsPerTok ?? 0, routing, rope,
            count.Total, count.ActivatedPerToken, count.Mtp, count.MtpStoredCopies,
            ((long)c.KvLoraRank + c.QkRopeHeadDim) * c.NumHiddenLayers,
            2L * c.NumAttentionHeads * c.VHeadDim * c.NumHiddenLayers);
    }

    public static string Human(long n) => n switch
    {
        >= 1_000_000_000 => (n / 1e9).ToString("0.##", CultureInfo.InvariantCulture) + "B",
        >= 1_000_000 => (n / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + "M",
        >= 1_000 => (n / 1e3).ToString("0.##", CultureInfo.InvariantCulture) + "K",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    public string ToText()
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"model_type        {ModelType}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"layers            {Layers} ({DenseLayers} dense, {MoeLayers} MoE) + {MtpDepth} MTP");
        sb.AppendLine(CultureInfo.InvariantCulture, $"hidden / vocab    {Hidden} / {Vocab}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"attention         {Heads} heads, {Attention}");
        if (RoutedExperts > 0)
            sb.AppendLine(CultureInfo.InvariantCulture, $"experts           {RoutedExperts} routed (top-{ExpertsPerToken}) + {SharedExperts} shared; {Routing}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"positions         {Rope}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"parameters        {Human(TotalParameters)} total ({TotalParameters:N0})");
        sb.AppendLine(CultureInfo.InvariantCulture, $"activated/token   {Human(ActivatedParameters)} ({ActivatedParameters:N0})");
        if (MtpDepth > 0) sb.AppendLine(CultureInfo.InvariantCulture, $"MTP modules       {Human(MtpParameters)} ({MtpParameters:N0}); {Human(MtpParameters + MtpStoredCopies)} as stored, with the embedding/head copies");
        sb.Append(CultureInfo.InvariantCulture, $"KV cache/token    {KvCacheValuesPerToken:N0} values (MLA latent) vs {MhaCacheValuesPerToken:N0} for plain MHA");
        if (KvCacheValuesPerToken > 0) sb.Append(CultureInfo.InvariantCulture, $" ({(double)MhaCacheValuesPerToken / KvCacheValuesPerToken:0.#}x)");
        return sb.ToString();
    }
}
