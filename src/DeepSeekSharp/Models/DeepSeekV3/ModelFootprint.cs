using System.Globalization;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// Element counts of a model's building blocks, from the config alone (checked arithmetic: callers turn an overflow
/// into an error naming the config). Shapes follow the modules: <see cref="Mla"/>, <see cref="Mlp"/>, <see cref="Moe"/>,
/// <see cref="MtpModule"/>.
/// </summary>
internal sealed record ModelShape(
    long Embedding, long Head, long Norm, long Attention, long DenseMlp, long Expert, long RoutedExperts, long MoeLayer,
    long EhProj, long GateBias, long TensorsPerDenseLayer, long TensorsPerMoeLayer, long LargestTensor)
{
    public static ModelShape Of(DeepSeekConfig c)
    {
        checked
        {
            long h = c.HiddenSize, v = c.VocabSize, n = c.NumAttentionHeads, dc = c.KvLoraRank, dr = c.QkRopeHeadDim;
            long qOut = n * ((long)c.QkNopeHeadDim + dr), kvBOut = n * ((long)c.QkNopeHeadDim + c.VHeadDim), oIn = n * c.VHeadDim;
            long q = c.QLoraRank ?? 0;
            long[] attentionWeights = c.HasQLora
                ? [h * q, q * qOut, h * (dc + dr), dc * kvBOut, oIn * h]   // q_a, q_b, kv_a, kv_b, o
                : [h * qOut, h * (dc + dr), dc * kvBOut, oIn * h];          // q, kv_a, kv_b, o
            long attention = attentionWeights.Sum() + (c.HasQLora ? q : 0) + dc; // + q_a_layernorm, kv_a_layernorm
            long experts = c.NRoutedExperts ?? 0, shared = c.NSharedExperts ?? 0;
            long expert = 3 * h * c.MoeIntermediateSize;
            long sharedWidth = shared * c.MoeIntermediateSize;
            long gateBias = c.HasMoe && c.TopkMethod == "noaux_tc" ? experts : 0;
            long moeLayer = experts * h + experts * expert + (shared > 0 ? 3 * h * sharedWidth : 0);
            long attentionTensors = c.HasQLora ? 7 : 5, normTensors = 2;
            long moeTensors = 1 + 3 * experts + (shared > 0 ? 3 : 0) + (gateBias > 0 ? 1 : 0);
            long largest = attentionWeights.Max();
            largest = Math.Max(largest, v * h);
            if (c.NumHiddenLayers > c.MoeLayerCount || !c.HasMoe) largest = Math.Max(largest, h * c.IntermediateSize);
            if (c.HasMoe) largest = Math.Max(largest, Math.Max(experts * h, Math.Max(h * c.MoeIntermediateSize, h * sharedWidth)));
            if (c.NumNextnPredictLayers > 0) largest = Math.Max(largest, 2 * h * h);
            return new ModelShape(v * h, v * h, h, attention, 3 * h * c.IntermediateSize, expert, experts * expert, moeLayer,
                2 * h * h, gateBias, attentionTensors + normTensors + 3, attentionTensors + normTensors + moeTensors, largest);
        }
    }
}

/// <summary>
/// What a model of a config takes in memory, from the config alone, and the check every command runs before it builds a
/// model (even a shape-only one, whose modules and tensors cost managed memory of their own) or materialises its
/// weights: <see cref="EnsureFits"/> refuses with one line instead of allocating for minutes and failing.
/// </summary>
/// <param name="Elements">every parameter and buffer element (main layers and MTP depths)</param>
/// <param name="ParameterElements">the parameters among them (what gradients and optimizer moments cover)</param>
/// <param name="Tensors">weight and buffer tensors</param>
/// <param name="StructureBytes">managed memory of the built model without its values (tensors, modules, RoPE frequencies)</param>
/// <param name="LargestTensor">elements of the largest single tensor (one array must hold it)</param>
public sealed record ModelFootprint(long Elements, long ParameterElements, long Tensors, long StructureBytes, long LargestTensor)
{
    /// <summary>
    /// Managed bytes one weight tensor of a built model costs besides its values: the <see cref="Tensors.Parameter"/>,
    /// its shape array, its module (a <see cref="Nn.Linear"/> and its share of the MLP holding it) with their lists.
    /// Measured 477 bytes per tensor on .NET 10 (a shape-only tiny-v3 with 40,000 routed experts per layer: 480,075
    /// tensors, 229 MB retained); rounded up.
    /// </summary>
    public const long BytesPerTensor = 512;

    public static ModelFootprint Of(DeepSeekConfig c)
    {
        var count = ParameterCount.Of(c);
        try
        {
            checked
            {
                var s = ModelShape.Of(c);
                long moe = c.MoeLayerCount, dense = c.NumHiddenLayers - moe;
                long biases = s.GateBias * (moe + (c.HasMoe ? c.NumNextnPredictLayers : 0L));
                // + enorm, hnorm, eh_proj, shared_head.norm per MTP depth; + embedding, final norm, head
                long mtpTensors = c.NumNextnPredictLayers * (4 + (c.HasMoe ? s.TensorsPerMoeLayer : s.TensorsPerDenseLayer));
                long tensors = 3 + dense * s.TensorsPerDenseLayer + moe * s.TensorsPerMoeLayer + mtpTensors;
                long parameters = count.Total + count.Mtp;
                return new ModelFootprint(parameters + biases, parameters, tensors, tensors * BytesPerTensor + 4L * c.QkRopeHeadDim, s.LargestTensor);
            }
        }
        catch (OverflowException)
        {
            throw new DeepSeekSharpException($"{c.SourceName}: the model's size does not fit in 64 bits");
        }
    }

    /// <summary>The memory this process may use (the GC's budget: physical memory, or the container's or heap's limit).</summary>
    public static long AvailableBytes => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>
    /// Throws a <see cref="DeepSeekSharpException"/> naming the config when its structure plus
    /// <paramref name="valueBytes"/> (what the command will allocate for its values: 0 for a shape-only model) exceed
    /// <see cref="AvailableBytes"/>, or when values are to be allocated and a tensor is larger than one array can hold.
    /// </summary>
    /// <param name="purpose">what the values are for, e.g. "its fp32 weights"</param>
    public static void EnsureFits(DeepSeekConfig c, long valueBytes, string purpose)
    {
        var f = Of(c);
        if (valueBytes > 0 && f.LargestTensor > Array.MaxLength)
            throw new DeepSeekSharpException(string.Create(CultureInfo.InvariantCulture,
                $"{c.SourceName}: its largest weight has {f.LargestTensor:N0} elements, more than one array can hold ({Array.MaxLength:N0})"));
        long need = f.StructureBytes > long.MaxValue - valueBytes ? long.MaxValue : f.StructureBytes + valueBytes;
        long available = AvailableBytes;
        if (need > available)
            throw new DeepSeekSharpException(string.Create(CultureInfo.InvariantCulture,
                $"{c.SourceName}: the model needs {Gb(need)} ({(valueBytes > 0 ? $"{Gb(valueBytes)} for {purpose}, " : "")}{Gb(f.StructureBytes)} for its {f.Tensors:N0} tensors), more than the {Gb(available)} this process may use"));
    }

    /// <summary>Bytes of <paramref name="elements"/> values of <paramref name="bytesEach"/> bytes, saturating (a size past
    /// 2^63 bytes is refused like any other that does not fit).</summary>
    public static long Bytes(long elements, long bytesEach) => elements > long.MaxValue / bytesEach ? long.MaxValue : elements * bytesEach;

    private static string Gb(long bytes) => (bytes / 1e9).ToString("0.##", CultureInfo.InvariantCulture) + " GB";
}
