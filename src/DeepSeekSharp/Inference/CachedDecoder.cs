using System.Collections.Concurrent;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Inference;

/// <summary>
/// Runs a <see cref="DeepSeekModel"/> incrementally with MLA latent caches: prefill and decode are the same call
/// (new tokens of one or more sequences, each appended to its own cache). Rows of all sequences share every
/// projection and MoE GEMM; attention runs per row over its sequence's cache. The MTP modules run the same way with
/// caches of their own, for speculative drafting.
/// </summary>
/// <remarks>
/// A call over more than <see cref="Sgemm.SkinnyRows"/> rows (many sequences decoded together, GRPO's rollouts, or a
/// prefill) multiplies by weights packed once per decoder into the GEMM's panel layout (<see cref="IBackend.PackGemmB"/>),
/// instead of packing every weight again in every step: with a few dozen rows, repacking cost as much as the product.
/// They are packed on first use, so batch-1 decoding (which streams the weights) never holds a packed copy. Only plain
/// fp32 Linears are packed; one with an adapter, stored compressed or computing in FP8/BF16 runs as the module does.
/// The packed copies are taken from the weights as they are then: build a new decoder after the weights change.
/// </remarks>
public sealed class CachedDecoder
{
    /// <summary>kv_b_proj weights [n·(dn+dv), dc] with their adapter folded in, by attention module.</summary>
    private readonly Dictionary<Mla, float[]> _foldedKvB = [];

    /// <summary>Weights packed for products over many rows, by Linear (null: that Linear runs as a module).</summary>
    private readonly ConcurrentDictionary<Linear, Lazy<PackedMatrix?>> _packed = new();

    /// <summary>Decodes with <paramref name="model"/>; a LoRA adapter on kv_b_proj is read as it is now (build a new decoder after training it).</summary>
    public CachedDecoder(DeepSeekModel model)
    {
        Model = model;
        // Absorbed attention reads kv_b_proj's weight (W_UK, W_UV) itself instead of calling the Linear, so an adapter
        // there (LoRA) is folded into a copy once, here: W + scale·B·A. Without an adapter the weight is read as it is.
        foreach (var block in model.Layers.Concat(model.MtpModules.Select(m => m.Block)))
            if (block.SelfAttn.KvBProj.Adapter is not null)
                _foldedKvB[block.SelfAttn] = block.SelfAttn.KvBProj.EffectiveWeight();
    }

    public DeepSeekModel Model { get; }

    private DeepSeekConfig C => Model.Config;

    public LatentKvCache NewCache() => new(C.NumHiddenLayers, C.KvLoraRank, C.QkRopeHeadDim);

    /// <summary>A cache for MTP depth modules (one layer each).</summary>
    public LatentKvCache NewMtpCache() => new(Math.Max(1, Model.MtpModules.Count), C.KvLoraRank, C.QkRopeHeadDim);

    /// <summary>Bytes per token plain multi-head attention would cache (K and V of every head, fp32) — for comparison.</summary>
    public long MhaBytesPerToken => (long)C.NumHiddenLayers * C.NumAttentionHeads * (C.QkHeadDim + C.VHeadDim) * sizeof(float);

    /// <summary>Feeds new tokens; returns logits [rows, V] and final hidden states [rows, H] (after model.norm).</summary>
    public (Tensor Logits, Tensor Hidden) Forward(IReadOnlyList<(int[] Tokens, LatentKvCache Cache)> batch)
    {
        using var _ = GradMode.NoGrad();
        Tensor hidden = ForwardHidden(batch);
        return (Model.LmHead.Forward(hidden), hidden);
    }

    /// <summary>
    /// Feeds new tokens like <see cref="Forward"/> but applies the output head to each sequence's last new row only:
    /// what greedy or sampled decoding needs, without the [rows, V] logits of a long prefill.
    /// </summary>
    /// <returns>logits [sequences, V], row s for the token after sequence s's last new token</returns>
    public Tensor ForwardLastLogits(IReadOnlyList<(int[] Tokens, LatentKvCache Cache)> batch)
    {
        using var _ = GradMode.NoGrad();
        Tensor hidden = ForwardHidden(batch);                     // [rows, H]
        if (batch.All(b => b.Tokens.Length == 1)) return Project(Model.LmHead, hidden);   // a decode step: every row is a last row
        int h = C.HiddenSize;
        Tensor last = Tensor.Empty(batch.Count, h);               // [sequences, H]
        int row = 0;
        for (int s = 0; s < batch.Count; s++)
        {
            row += batch[s].Tokens.Length;
            hidden.Span.Slice((row - 1) * h, h).CopyTo(last.Span.Slice(s * h, h));
        }
        return Project(Model.LmHead, last);
    }

    private Tensor ForwardHidden(IReadOnlyList<(int[] Tokens, LatentKvCache Cache)> batch)
    {
        var (ids, seqOf, pos, caches) = Layout(batch);
        foreach (var id in ids)
            if ((uint)id >= (uint)C.VocabSize) throw new DeepSeekSharpException($"token id {id} is outside the vocabulary [0, {C.VocabSize})");
        int maxPos = pos.Length == 0 ? 0 : pos.Max();
        if (maxPos >= C.MaxPositionEmbeddings)
            throw new DeepSeekSharpException($"context of {maxPos + 1} tokens exceeds max_position_embeddings {C.MaxPositionEmbeddings}");
        Tensor h = Model.Inner.EmbedTokens.Forward(ids);
        for (int l = 0; l < Model.Layers.Count; l++) h = Block(Model.Layers[l], h, l, caches, seqOf, pos);
        foreach (var (tokens, cache) in batch) cache.Advance(tokens.Length);
        return Model.Inner.Norm.Forward(h);
    }

    /// <summary>
    /// MTP depth 1 over new positions: row r combines embed(<paramref name="nextTokens"/>[r]) with the main hidden
    /// state <paramref name="previousHidden"/>[r] (model.md, MTP) and predicts the token after next.
    /// </summary>
    /// <returns>logits [rows, V] of the token two ahead</returns>
    public Tensor MtpForward(int[] nextTokens, Tensor previousHidden, LatentKvCache mtpCache)
    {
        using var _ = GradMode.NoGrad();
        if (Model.MtpModules.Count == 0) throw new DeepSeekSharpException("the model has no MTP module (num_nextn_predict_layers = 0)");
        var module = Model.MtpModules[0];
        var batch = new[] { (nextTokens, mtpCache) };
        var (ids, seqOf, pos, caches) = Layout(batch);
        Tensor e = Model.Inner.EmbedTokens.Forward(ids);
        Tensor merged = module.EhProj.Forward(Functional.ConcatLast(module.ENorm.Forward(e), module.HNorm.Forward(previousHidden)));
        Tensor h = Block(module.Block, merged, 0, caches, seqOf, pos);
        mtpCache.Advance(nextTokens.Length);
        return Model.LmHead.Forward(module.SharedHeadNorm.Forward(h));
    }

    private (int[] Ids, int[] SeqOf, int[] Pos, List<LatentKvCache> Caches) Layout(IReadOnlyList<(int[] Tokens, LatentKvCache Cache)> batch)
    {
        int rows = batch.Sum(b => b.Tokens.Length);
        var ids = new int[rows];
        var seqOf = new int[rows];
        var pos = new int[rows];
        var caches = new List<LatentKvCache>(batch.Count);
        int r = 0;
        for (int s = 0; s < batch.Count; s++)
        {
            var (tokens, cache) = batch[s];
            cache.Reserve(tokens.Length);
            caches.Add(cache);
            for (int j = 0; j < tokens.Length; j++, r++)
            {
                ids[r] = tokens[j];
                seqOf[r] = s;
                pos[r] = cache.Length + j;
            }
        }
        return (ids, seqOf, pos, caches);
    }

    private Tensor Block(DecoderBlock block, Tensor h, int layer, List<LatentKvCache> caches, int[] seqOf, int[] pos)
    {
        using var scope = TensorScope.Begin();                    // a layer's intermediates go back to the pool when it ends
        Tensor attn = AbsorbedMlaAttention.Forward(block.SelfAttn, C, Model.Rope, block.InputLayerNorm.Forward(h), layer, caches, seqOf, pos,
            _foldedKvB.GetValueOrDefault(block.SelfAttn), Project);
        Tensor a = Functional.Add(h, attn);
        Tensor f = block.PostAttentionLayerNorm.Forward(a);
        return scope.Keep(Functional.Add(a, block.Moe is not null ? MoeForward(block.Moe, f) : Mlp(block.DenseMlp!, f)));
    }

    /// <summary>x · Wᵀ of <paramref name="linear"/>: with its packed weight over more than <see cref="Sgemm.SkinnyRows"/> rows, else as the module.</summary>
    /// <param name="x">[rows, in]</param>
    /// <returns>[rows, out]</returns>
    private Tensor Project(Linear linear, Tensor x)
    {
        int rows = x.Shape[0];
        if (rows <= Sgemm.SkinnyRows || _packed.GetOrAdd(linear, l => new Lazy<PackedMatrix?>(() => Pack(l))).Value is not { } packed)
            return linear.Forward(x);
        Tensor y = Tensor.Empty(rows, linear.OutFeatures);
        x.Backend.GemmPackedB(false, rows, 1f, x.Span, linear.InFeatures, packed, 0f, y.Span, linear.OutFeatures);
        return y;
    }

    private static PackedMatrix? Pack(Linear l) =>
        l.Adapter is null && l.InferenceWeight is null && !l.Fp8Compute && !l.Bf16Compute && !l.Weight.IsMeta
            ? l.Weight.Backend.PackGemmB(true, l.Weight.Span, l.InFeatures, l.OutFeatures, l.InFeatures)
            : null;

    /// <summary>SwiGLU, down(silu(gate(x)) ⊙ up(x)), through <see cref="Project"/>; an FP8-cached MLP runs as its module.</summary>
    private Tensor Mlp(Mlp mlp, Tensor x) =>
        mlp.Fp8SwigluCache ? mlp.Forward(x) : Project(mlp.DownProj, Functional.SiluMul(Project(mlp.GateProj, x), Project(mlp.UpProj, x)));

    /// <summary>
    /// DeepSeekMoE as <see cref="Moe"/> computes it (the same gate, so the same routing), with each routed expert's rows
    /// and the shared experts through <see cref="Project"/>; a call of at most <see cref="Sgemm.SkinnyRows"/> rows runs the module.
    /// </summary>
    /// <param name="x">[N, H]</param>
    /// <returns>[N, H]</returns>
    private Tensor MoeForward(Moe moe, Tensor x)
    {
        if (x.Shape[0] <= Sgemm.SkinnyRows) return moe.Forward(x);
        Tensor? shared = moe.SharedExperts is null ? null : Mlp(moe.SharedExperts, x);        // Σ FFN^(s)(x) [N, H]
        var (_, idx, weights) = moe.Gate.Forward(x);                                          // top-k experts and g [N, k]
        var rows = RoutedRows.Group(idx, moe.Gate.TopK, moe.Experts.Count);
        Tensor stacked = Functional.RoutedExperts(x, rows.Token, rows.Offsets, (e, expertRows) => Mlp(moe.Experts[e], expertRows));
        Tensor y = Functional.MoeCombine(weights, stacked, rows.Token, rows.Slot);            // Σ_j g_j · Expert_j(x)
        return shared is null ? y : Functional.Add(shared, y);
    }
}
