namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Parameter counts from shapes alone (works on a meta model, e.g. the 671B config).</summary>
/// <param name="Total">main model parameters (embedding, blocks, final norm, head), MTP excluded</param>
/// <param name="ActivatedPerToken">parameters whose weights one token computes with: everything except the routed experts
/// and the embedding table (a row lookup, not a matrix product), plus k experts per MoE layer. This is the convention
/// that reproduces DeepSeek's published figures (V3: 37B, V2-Lite: 2.4B).</param>
/// <param name="Mtp">parameters of the MTP layers (their own weights; the shared embedding/head are not counted again)</param>
/// <param name="RoutedExperts">all routed-expert parameters</param>
/// <param name="MtpStoredCopies">the copies of embedding and head that checkpoints store under each MTP layer</param>
public sealed record ParameterCount(long Total, long ActivatedPerToken, long Mtp, long RoutedExperts, long MtpStoredCopies)
{
    public static ParameterCount Of(DeepSeekModel model)
    {
        var c = model.Config;
        long total = 0, mtp = 0, routed = 0, activatedRouted = 0;
        var mtpPrefixes = new List<string>();
        for (int k = 0; k < model.MtpModules.Count; k++) mtpPrefixes.Add($"model.layers.{c.NumHiddenLayers + k}.");
        foreach (var (name, p) in model.NamedParameters())
        {
            bool isMtp = mtpPrefixes.Exists(name.StartsWith);
            if (isMtp) { mtp += p.Length; continue; }
            total += p.Length;
            if (name.Contains(".mlp.experts.", StringComparison.Ordinal)) routed += p.Length;
        }
        if (c.HasMoe)
        {
            int moeLayers = 0;
            for (int l = 0; l < c.NumHiddenLayers; l++) if (c.IsMoeLayer(l)) moeLayers++;
            long perExpert = 3L * c.HiddenSize * c.MoeIntermediateSize;
            activatedRouted = moeLayers * (long)c.NumExpertsPerTok!.Value * perExpert;
        }
        long copies = 0;
        foreach (var (_, shared) in model.MtpSharedCopies()) copies += shared.Length;
        long embedding = model.Inner.EmbedTokens.Weight.Length;
        return new ParameterCount(total, total - routed - embedding + activatedRouted, mtp, routed, copies);
    }
}
