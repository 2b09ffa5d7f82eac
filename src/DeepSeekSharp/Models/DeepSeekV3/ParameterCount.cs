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
    /// <summary>
    /// The same counts from the config alone, in closed form (no model is built, so any size is answered at once; the
    /// model-walking <see cref="Of(DeepSeekModel)"/> is the reference it is tested against). Arithmetic is checked: a
    /// config whose count does not fit 64 bits is an error naming its file.
    /// </summary>
    public static ParameterCount Of(DeepSeekConfig c)
    {
        try
        {
            checked
            {
                var shape = ModelShape.Of(c);
                long layers = c.NumHiddenLayers, moeLayers = c.MoeLayerCount, denseLayers = layers - moeLayers;
                long total = shape.Embedding + shape.Head + shape.Norm
                    + layers * (shape.Attention + 2 * shape.Norm) + denseLayers * shape.DenseMlp + moeLayers * shape.MoeLayer;
                long routed = moeLayers * shape.RoutedExperts;
                long activatedRouted = moeLayers * (c.NumExpertsPerTok ?? 0) * shape.Expert;
                long mtpBlock = shape.Attention + 2 * shape.Norm + (c.HasMoe ? shape.MoeLayer : shape.DenseMlp);
                long mtpDepth = 2 * shape.Norm + shape.EhProj + mtpBlock + shape.Norm; // enorm, hnorm, eh_proj, block, shared_head.norm
                long depths = c.NumNextnPredictLayers;
                return new ParameterCount(total, total - routed - shape.Embedding + activatedRouted, depths * mtpDepth, routed,
                    depths * (shape.Embedding + shape.Head));
            }
        }
        catch (OverflowException)
        {
            throw new DeepSeekSharpException($"{c.SourceName}: the parameter count does not fit in 64 bits");
        }
    }

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
