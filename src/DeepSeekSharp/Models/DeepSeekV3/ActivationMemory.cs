namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// Bytes the training graph keeps for the backward, per token, from the shapes alone: what each layer's ops save
/// (docs/architecture.md §3 and §5), without recomputation options. fp32 and bf16 keep fp32 activations; fp8 keeps the
/// inputs of the FP8 Linears and of SwiGLU as E4M3 codes with 1×128 fp32 scales (1 + 4/128 bytes a value) and o_proj's
/// input in E5M6 (2 + 4/128), V3's recipe; the residual stream, norms' inputs, the attention core's inputs, the gate and
/// the expert outputs the combine reads stay fp32. docs/parallelism.md compares it with `dss bench train`'s
/// measurement.
/// </summary>
/// <remarks>
/// Legend: H hidden, n heads, dn/dr/dv head dims, dc kv_lora_rank, dq q_lora_rank, I intermediate, Im
/// moe_intermediate, Is = n_shared·Im, E routed experts, k experts per token.
/// </remarks>
public static class ActivationMemory
{
    private const double Fp8 = 1 + 4.0 / 128, E5M6 = 2 + 4.0 / 128, F32 = 4;

    /// <summary>Attention half of a block: h, the normed input, the q path, c_kv, k_pe, kv_b, the attention output and its log-sum-exp.</summary>
    public static double Attention(DeepSeekConfig c, ActivationRecipe recipe)
    {
        int h = c.HiddenSize, n = c.NumAttentionHeads, dq = c.QLoraRank ?? 0, dc = c.KvLoraRank;
        double q = (double)n * (c.QkNopeHeadDim + c.QkRopeHeadDim), kv = (double)n * (c.QkNopeHeadDim + c.VHeadDim), o = (double)n * c.VHeadDim;
        int norms = c.HasQLora ? 3 : 2; // input_layernorm, kv_a_layernorm, q_a_layernorm: 1/rms per token each
        bool fp8 = recipe.IsFp8;
        // A norm's fp32 output is kept for the Linears reading it, unless recomputed; FP8 Linears keep their own FP8 copy.
        double normedFp32 = recipe.RecomputeNorms ? 0 : F32;
        // The normed input feeds q_a (or q_proj) and kv_a; under FP8 each keeps its own FP8 copy instead.
        double normed = fp8 ? 2 * Fp8 * h : normedFp32 * h;
        double qPath = c.HasQLora ? F32 * dq + (fp8 ? Fp8 : normedFp32) * dq : 0; // q_a output (norm input), normed (q_b input)
        double cKv = F32 * dc + (fp8 ? Fp8 : normedFp32) * dc;                     // raw (norm input), normed (kv_b input)
        double up = recipe.RecomputeMlaUp ? 0 : F32 * (q + kv);                      // the attention core's q and kv_b
        return F32 * h + normed + qPath + up + cKv + F32 * c.QkRopeHeadDim + (fp8 ? E5M6 : F32) * o + F32 * n + F32 * norms;
    }

    /// <summary>Feed-forward half of a block: the residual a, the normed input, then a dense SwiGLU or the MoE.</summary>
    /// <param name="moe">whether the block's feed-forward is the MoE</param>
    /// <param name="recipe">precision, recomputation, and EP (with EP &gt; 1 an fp32 expert keeps the rows it received;
    /// one process reads them in place)</param>
    public static double FeedForward(DeepSeekConfig c, bool moe, ActivationRecipe recipe)
    {
        int h = c.HiddenSize;
        bool fp8 = recipe.IsFp8;
        double a = F32 * h + F32, normed = recipe.RecomputeNorms ? 0 : F32 * h; // residual (norm input) and its 1/rms
        if (!moe)
            return a + (fp8 ? 2 * Fp8 * h : normed) + Swiglu(c.IntermediateSize, fp8);
        int k = c.NumExpertsPerTok!.Value, e = c.NRoutedExperts!.Value, shared = (c.NSharedExperts ?? 0) * c.MoeIntermediateSize;
        // The gate reads the normed input in fp32; scores [E] and weights [k] for its backward.
        double bytes = a + normed + F32 * e + F32 * k;
        int expertParallel = recipe.ExpertParallel;
        // Per routed slot: fp32 keeps gate+up outputs (SwiGLU recomputed, V3's recipe) and the expert output the combine
        // reads; fp8 runs each expert as a module: FP8 copies of the rows for gate and up, of the SwiGLU inputs and of
        // down's input, and the fp32 output.
        double slot = fp8
            ? 2 * Fp8 * h + 3 * Fp8 * c.MoeIntermediateSize + F32 * h
            : 2 * F32 * c.MoeIntermediateSize + F32 * h + (expertParallel > 1 ? F32 * h : 0);
        bytes += k * slot;
        if (shared > 0) bytes += (fp8 ? 2 * Fp8 * h : 0) + Swiglu(shared, fp8);
        return bytes;
    }

    /// <summary>A SwiGLU MLP's own saves: gate and up outputs and the down input (fp8: FP8 copies of each).</summary>
    private static double Swiglu(int intermediate, bool fp8) => (fp8 ? 3 * Fp8 : 3 * F32) * intermediate;

    /// <summary>Decoder block <paramref name="layer"/> of the main model.</summary>
    public static double Block(DeepSeekConfig c, int layer, ActivationRecipe recipe) =>
        Attention(c, recipe) + FeedForward(c, c.IsMoeLayer(layer), recipe);

    /// <summary>The final norm (input and output) and the head's input gradient, formed during the forward.</summary>
    public static double Head(DeepSeekConfig c) => 3 * F32 * c.HiddenSize + F32;

    /// <summary>
    /// The head's weight gradient share formed during the forward (bytes per micro-batch, not per token): when the
    /// micro-batch has at least H tokens the cross-entropy op accumulates dW [V, H] while it runs.
    /// </summary>
    public static double HeadWeightGradient(DeepSeekConfig c, long tokensPerMicroBatch) =>
        tokensPerMicroBatch >= c.HiddenSize ? F32 * c.VocabSize * (double)c.HiddenSize : 0;

    /// <summary>One MTP depth: the shifted embedding, the two normed halves eh_proj reads, its block and its head pass.</summary>
    public static double MtpDepth(DeepSeekConfig c, ActivationRecipe recipe) =>
        F32 * c.HiddenSize + 2 * F32 * c.HiddenSize + 2 * F32 + Attention(c, recipe) + FeedForward(c, c.HasMoe, recipe) + Head(c);
}

/// <summary>What decides the activations a block keeps: the training precision, expert parallelism and the recomputation options.</summary>
/// <param name="Precision">fp32, bf16 or fp8</param>
/// <param name="ExpertParallel">EP degree (received expert rows are kept when &gt; 1)</param>
/// <param name="RecomputeNorms">config key recompute_norms: RMSNorm outputs are rebuilt in the backward</param>
/// <param name="RecomputeMlaUp">config key recompute_mla_up: MLA's q and kv_b are rebuilt in the backward</param>
public readonly record struct ActivationRecipe(string Precision, int ExpertParallel = 1, bool RecomputeNorms = false, bool RecomputeMlaUp = false)
{
    public bool IsFp8 => Precision == "fp8";
}
