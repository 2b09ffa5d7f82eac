using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Logits of the main head and of each MTP depth, plus the final hidden state.</summary>
/// <param name="Logits">[B·T, V]</param>
/// <param name="Hidden">[B·T, H] after model.norm</param>
/// <param name="MtpLogits">per depth k = 1..D: [B·T, V]; row i of a sequence predicts t_{i+k+1} (valid for i &lt; T−k)</param>
public sealed record ModelOutput(Tensor Logits, Tensor Hidden, Tensor[] MtpLogits);

/// <summary>
/// The whole DeepSeek-V3 / V2 model (DeepseekV3ForCausalLM): h0 = embed(tokens); decoder blocks; model.norm;
/// lm_head; optional MTP depths. Built with <c>materialize: false</c> it has shapes but no storage (inspection
/// of a 671B config allocates nothing).
/// </summary>
public sealed class DeepSeekModel : Module
{
    public DeepSeekModel(DeepSeekConfig config, bool materialize)
    {
        // Before any module exists: a config too large for this process is refused here, not after minutes of allocating.
        ModelFootprint.EnsureFits(config, materialize ? ModelFootprint.Bytes(ModelFootprint.Of(config).Elements, sizeof(float)) : 0, "its fp32 weights");
        Config = config;
        Rope = new YarnRope(config);
        Inner = Child("model", new Body(config, Rope, materialize));
        LmHead = Child("lm_head", new Linear(config.HiddenSize, config.VocabSize, materialize));
    }

    public DeepSeekConfig Config { get; }

    public YarnRope Rope { get; }

    public Body Inner { get; }

    public Linear LmHead { get; }

    public IReadOnlyList<DecoderBlock> Layers => Inner.Blocks;

    public IReadOnlyList<MtpModule> MtpModules => Inner.Mtp;

    /// <summary>Names under which checkpoints store copies of the shared embedding and head for each MTP depth.</summary>
    public IEnumerable<(string Name, Parameter Shared)> MtpSharedCopies()
    {
        for (int k = 0; k < MtpModules.Count; k++)
        {
            int layer = Config.NumHiddenLayers + k;
            yield return ($"model.layers.{layer}.embed_tokens.weight", Inner.EmbedTokens.Weight);
            yield return ($"model.layers.{layer}.shared_head.head.weight", LmHead.Weight);
        }
    }

    /// <param name="tokens">[B·T] token ids</param>
    /// <param name="batch">geometry and positions</param>
    /// <param name="mtpDepth">how many MTP depths to run (0 … num_nextn_predict_layers)</param>
    public ModelOutput Forward(int[] tokens, SequenceBatch batch, int mtpDepth = 0)
    {
        var (hidden, mtpHidden) = ForwardHidden(tokens, batch, mtpDepth);
        return new ModelOutput(LmHead.Forward(hidden), hidden, [.. mtpHidden.Select(LmHead.Forward)]);
    }

    /// <summary>
    /// Everything up to the output head: the final normed hidden state [B·T, H] and, per MTP depth, the normed hidden
    /// state its shared head reads (so a loss can apply the head blockwise without materialising logits).
    /// </summary>
    public (Tensor Hidden, Tensor[] MtpHidden) ForwardHidden(int[] tokens, SequenceBatch batch, int mtpDepth = 0)
    {
        if (tokens.Length != batch.Tokens) throw new ArgumentException($"{tokens.Length} tokens for a batch of {batch.Tokens}");
        if (mtpDepth > MtpModules.Count) throw new DeepSeekSharpException($"the model has {MtpModules.Count} MTP depth(s), {mtpDepth} requested");
        Tensor h = Inner.EmbedTokens.Forward(tokens);                                      // embed(t) [B·T, H]
        Tensor hidden = Inner.Norm.Forward(Sequential.Forward(Inner.Blocks, h, batch));    // norm(h^L) [B·T, H]
        var mtpHidden = new Tensor[mtpDepth];
        Tensor previous = hidden; // h⁰ is taken AFTER model.norm, as the serving engines feed real checkpoints
        for (int k = 1; k <= mtpDepth; k++)
        {
            var module = MtpModules[k - 1];
            Tensor embedded = Inner.EmbedTokens.Forward(ShiftTokens(tokens, batch, k));
            previous = module.Forward(embedded, previous, batch);
            mtpHidden[k - 1] = module.SharedHeadNorm.Forward(previous);
        }
        return (hidden, mtpHidden);
    }

    /// <summary>
    /// Row i gets t_{i+k}, the token k ahead in its document; rows with none (past the end of the document) get token 0.
    /// Causality keeps them out of every row that has a target at depth k.
    /// </summary>
    public static int[] ShiftTokens(int[] tokens, SequenceBatch batch, int k)
    {
        var shifted = new int[tokens.Length];
        var ends = batch.DocumentEnds();
        for (int i = 0; i < tokens.Length; i++) shifted[i] = i + k < ends[i] ? tokens[i + k] : 0;
        return shifted;
    }

    /// <summary>
    /// Targets for depth k (0 = main head): row i predicts label_{i+k+1}, the label k+1 rows ahead in its document;
    /// −1 (no loss) where that is past the end of the document or the label is negative (HF's −100: untrained).
    /// Pre-training passes the tokens as their own labels.
    /// </summary>
    public static int[] Targets(int[] labels, SequenceBatch batch, int k)
    {
        var targets = new int[labels.Length];
        var ends = batch.DocumentEnds();
        for (int i = 0; i < labels.Length; i++)
        {
            int j = i + k + 1;
            targets[i] = j < ends[i] && labels[j] >= 0 ? labels[j] : -1;
        }
        return targets;
    }

    /// <summary>The model's "model." subtree: embeddings, decoder blocks then MTP layers, final norm.</summary>
    public sealed class Body : Module
    {
        public Body(DeepSeekConfig c, YarnRope rope, bool materialize)
        {
            EmbedTokens = Child("embed_tokens", new Embedding(c.VocabSize, c.HiddenSize, materialize));
            var layers = Child("layers", new ModuleList<Module>());
            for (int l = 0; l < c.NumHiddenLayers; l++) Blocks.Add((DecoderBlock)layers.Add(new DecoderBlock(c, rope, c.IsMoeLayer(l), materialize)));
            for (int k = 0; k < c.NumNextnPredictLayers; k++) Mtp.Add((MtpModule)layers.Add(new MtpModule(c, rope, materialize)));
            Norm = Child("norm", new RmsNorm(c.HiddenSize, c.RmsNormEps, materialize));
        }

        public Embedding EmbedTokens { get; }
        public List<DecoderBlock> Blocks { get; } = [];
        public List<MtpModule> Mtp { get; } = [];
        public RmsNorm Norm { get; }
    }

    /// <summary>
    /// Recompute the outputs of the decoder's RMSNorms (attention and FFN input norms, MLA's q_a / kv_a norms) in the
    /// backward instead of keeping them for it (DeepSeek-V3's recomputation; config key <c>recompute_norms</c>).
    /// Gradients are unchanged: the recomputation runs the same kernel on the same inputs.
    /// </summary>
    public void RecomputeNorms(bool enabled)
    {
        foreach (var (_, module) in NamedModules())
            if (module is RmsNorm norm) norm.RecomputeOutput = enabled;
    }

    /// <summary>Recompute MLA's up-projections (q_b with its RoPE, kv_b) in the backward (config key <c>recompute_mla_up</c>).</summary>
    public void RecomputeMlaUpProjections(bool enabled)
    {
        foreach (var (_, module) in NamedModules())
            if (module is Mla mla) mla.RecomputeUpProjections = enabled;
    }
}
