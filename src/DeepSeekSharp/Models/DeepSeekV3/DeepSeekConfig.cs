using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// The HF <c>config.json</c> of the DeepSeek-V3 family (<c>deepseek_v3</c>, <c>deepseek_v2</c>). Property names map
/// to the HF keys so real configs load unchanged; keys a config omits take the defaults of its model_type
/// (see <see cref="ApplyDefaults"/>). Dimension legend used across this folder: T tokens, H hidden, n heads,
/// dn qk_nope_head_dim, dr qk_rope_head_dim, dv v_head_dim, dc kv_lora_rank, E routed experts, k experts per token.
/// </summary>
public sealed record DeepSeekConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "deepseek_v3";
    [JsonPropertyName("architectures")] public string[]? Architectures { get; init; }
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 129280;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 7168;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 18432;
    [JsonPropertyName("moe_intermediate_size")] public int MoeIntermediateSize { get; init; } = 2048;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; } = 61;
    [JsonPropertyName("num_nextn_predict_layers")] public int NumNextnPredictLayers { get; init; }
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; } = 128;
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; init; }
    [JsonPropertyName("n_shared_experts")] public int? NSharedExperts { get; init; }
    [JsonPropertyName("n_routed_experts")] public int? NRoutedExperts { get; init; }
    [JsonPropertyName("routed_scaling_factor")] public float? RoutedScalingFactor { get; init; }
    [JsonPropertyName("kv_lora_rank")] public int KvLoraRank { get; init; } = 512;
    [JsonPropertyName("q_lora_rank")] public int? QLoraRank { get; init; }
    [JsonPropertyName("qk_rope_head_dim")] public int QkRopeHeadDim { get; init; } = 64;
    [JsonPropertyName("v_head_dim")] public int VHeadDim { get; init; } = 128;
    [JsonPropertyName("qk_nope_head_dim")] public int QkNopeHeadDim { get; init; } = 128;
    [JsonPropertyName("topk_method")] public string? TopkMethod { get; init; }
    [JsonPropertyName("n_group")] public int? NGroup { get; init; }
    [JsonPropertyName("topk_group")] public int? TopkGroup { get; init; }
    [JsonPropertyName("num_experts_per_tok")] public int? NumExpertsPerTok { get; init; }
    [JsonPropertyName("moe_layer_freq")] public int MoeLayerFreq { get; init; } = 1;
    [JsonPropertyName("first_k_dense_replace")] public int FirstKDenseReplace { get; init; }
    [JsonPropertyName("norm_topk_prob")] public bool? NormTopkProb { get; init; }
    [JsonPropertyName("scoring_func")] public string? ScoringFunc { get; init; }
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "silu";
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 4096;
    [JsonPropertyName("initializer_range")] public float InitializerRange { get; init; } = 0.02f;
    [JsonPropertyName("rms_norm_eps")] public float RmsNormEps { get; init; } = 1e-6f;
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }
    [JsonPropertyName("rope_theta")] public float RopeTheta { get; init; } = 10000f;
    [JsonPropertyName("rope_scaling")] public RopeScalingConfig? RopeScaling { get; init; }
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; init; }
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; init; }
    [JsonPropertyName("eos_token_id")] public int? EosTokenId { get; init; }
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; init; }
    [JsonPropertyName("quantization_config")] public QuantizationConfig? QuantizationConfig { get; init; }

    /// <summary>The file (or preset) this config was read from, for error messages; not a config key.</summary>
    [JsonIgnore] public string SourceName { get; init; } = "config.json";

    public bool IsV2 => ModelType == "deepseek_v2";

    public bool HasQLora => QLoraRank is > 0;

    public bool HasMoe => NRoutedExperts is > 0;

    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;

    /// <summary>Dense SwiGLU for l &lt; first_k_dense_replace, else MoE when l % moe_layer_freq == 0 (model.md).</summary>
    public bool IsMoeLayer(int layer) => HasMoe && layer >= FirstKDenseReplace && layer % Math.Max(1, MoeLayerFreq) == 0;

    public static DeepSeekConfig Load(string path)
    {
        return Parse(IO.InputFile.ReadAllText(path, "config file"), path);
    }

    public static DeepSeekConfig Parse(string json, string sourceName = "config.json")
    {
        DeepSeekConfig? cfg;
        try { cfg = JsonSerializer.Deserialize<DeepSeekConfig>(json, JsonOptions); }
        catch (JsonException e) { throw new DeepSeekSharpException($"{sourceName}: invalid config JSON ({e.Message.Split('\n')[0]})"); }
        if (cfg is null) throw new DeepSeekSharpException($"{sourceName}: config is empty");
        cfg = cfg.ApplyDefaults() with { SourceName = sourceName };
        cfg.Validate(sourceName);
        return cfg;
    }

    /// <summary>Fills keys the file left out with the defaults of HF's DeepseekV2Config / DeepseekV3Config.</summary>
    public DeepSeekConfig ApplyDefaults() => IsV2
        ? this with
        {
            ScoringFunc = ScoringFunc ?? "softmax",
            TopkMethod = TopkMethod ?? "greedy",
            NormTopkProb = NormTopkProb ?? false,
            RoutedScalingFactor = RoutedScalingFactor ?? 1f,
            NGroup = NGroup ?? 1,
            TopkGroup = TopkGroup ?? 1,
            NumExpertsPerTok = NumExpertsPerTok ?? (HasMoe ? 6 : 0),
            NSharedExperts = NSharedExperts ?? 0,
        }
        : this with
        {
            ScoringFunc = ScoringFunc ?? "sigmoid",
            TopkMethod = TopkMethod ?? "noaux_tc",
            NormTopkProb = NormTopkProb ?? true,
            RoutedScalingFactor = RoutedScalingFactor ?? 2.5f,
            NGroup = NGroup ?? 1,
            TopkGroup = TopkGroup ?? 1,
            NumExpertsPerTok = NumExpertsPerTok ?? (HasMoe ? 8 : 0),
            NSharedExperts = NSharedExperts ?? 0,
        };

    /// <summary>MoE layers among the decoder layers: l ≥ first_k_dense_replace with l % moe_layer_freq == 0 (closed form, so a
    /// config of any depth is counted at once).</summary>
    public int MoeLayerCount
    {
        get
        {
            if (!HasMoe || NumHiddenLayers <= FirstKDenseReplace) return 0;
            int freq = Math.Max(1, MoeLayerFreq);
            // Multiples of freq in [first, layers): those below layers minus those below first.
            long MultiplesBelow(long n) => n <= 0 ? 0 : (n - 1) / freq + 1;
            return (int)(MultiplesBelow(NumHiddenLayers) - MultiplesBelow(FirstKDenseReplace));
        }
    }

    /// <summary>
    /// The one check of a model config, run by every command on every config it reads (after the model_type defaults):
    /// every numeric key in its range and finite, the keys consistent with each other, and every weight dimension
    /// they imply within what a tensor dimension can hold, so no command builds, runs or counts a model that would give
    /// NaN logits or an overflowed shape. Sizes against memory are <see cref="ModelFootprint"/>'s check.
    /// </summary>
    private void Validate(string src)
    {
        void Require(bool ok, string what) { if (!ok) throw new DeepSeekSharpException($"{src}: {what}"); }
        void Positive(string key, long? value) => Require(value is null or > 0, $"{key} must be > 0 (got {value})");
        void NonNegative(string key, long? value) => Require(value is null or >= 0, $"{key} must be ≥ 0 (got {value})");
        void FinitePositive(string key, double value) => Require(double.IsFinite(value) && value > 0, $"{key} must be a finite number > 0 (got {value})");
        void FiniteNonNegative(string key, double value) => Require(double.IsFinite(value) && value >= 0, $"{key} must be a finite number ≥ 0 (got {value})");
        void Dimension(string what, long value) => Require(value <= int.MaxValue, $"{what} = {value} exceeds the largest tensor dimension ({int.MaxValue})");

        Require(ModelType is "deepseek_v3" or "deepseek_v2", $"unsupported model_type '{ModelType}' (expected deepseek_v3 or deepseek_v2)");
        Positive("vocab_size", VocabSize);
        Positive("hidden_size", HiddenSize);
        NonNegative("num_hidden_layers", NumHiddenLayers);
        NonNegative("num_nextn_predict_layers", NumNextnPredictLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("kv_lora_rank", KvLoraRank);
        NonNegative("q_lora_rank", QLoraRank);
        Require(QkRopeHeadDim > 0 && QkRopeHeadDim % 2 == 0, $"qk_rope_head_dim must be a positive even number (got {QkRopeHeadDim})");
        NonNegative("qk_nope_head_dim", QkNopeHeadDim);
        Positive("v_head_dim", VHeadDim);
        NonNegative("n_routed_experts", NRoutedExperts);
        NonNegative("n_shared_experts", NSharedExperts);
        NonNegative("num_experts_per_tok", NumExpertsPerTok);
        Positive("moe_layer_freq", MoeLayerFreq);
        NonNegative("first_k_dense_replace", FirstKDenseReplace);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        FinitePositive("rms_norm_eps", RmsNormEps);
        FiniteNonNegative("initializer_range", InitializerRange);
        Require(float.IsFinite(RopeTheta) && RopeTheta > 1, $"rope_theta must be a finite number > 1 (got {RopeTheta})");
        Require(BosTokenId is null || (BosTokenId >= 0 && BosTokenId < VocabSize), $"bos_token_id {BosTokenId} is outside the vocabulary [0, {VocabSize})");
        Require(EosTokenId is null || (EosTokenId >= 0 && EosTokenId < VocabSize), $"eos_token_id {EosTokenId} is outside the vocabulary [0, {VocabSize})");
        Require(HiddenAct == "silu", $"hidden_act '{HiddenAct}' is not supported (only silu)");
        Require(!AttentionBias, "attention_bias = true is not supported by the DeepSeek family");
        Require(!TieWordEmbeddings, "tie_word_embeddings = true is not supported (DeepSeek never ties)");

        // Dense layers (and MTP blocks of a dense model) need the dense MLP's width.
        bool hasDenseLayer = NumHiddenLayers > MoeLayerCount || (!HasMoe && NumNextnPredictLayers > 0);
        if (hasDenseLayer) Positive("intermediate_size", IntermediateSize);
        else NonNegative("intermediate_size", IntermediateSize);
        NonNegative("moe_intermediate_size", MoeIntermediateSize);
        FinitePositive("routed_scaling_factor", RoutedScalingFactor ?? 1f);
        if (HasMoe)
        {
            Positive("moe_intermediate_size", MoeIntermediateSize);
            Require(NumExpertsPerTok is > 0 && NumExpertsPerTok <= NRoutedExperts, $"num_experts_per_tok must be in [1, n_routed_experts = {NRoutedExperts}] (got {NumExpertsPerTok})");
            Require(ScoringFunc is "sigmoid" or "softmax", $"scoring_func '{ScoringFunc}' is not supported (sigmoid or softmax)");
            Require(TopkMethod is "noaux_tc" or "greedy" or "group_limited_greedy", $"topk_method '{TopkMethod}' is not supported");
            Require(NGroup is > 0 && NRoutedExperts % NGroup == 0, $"n_group must be > 0 and divide n_routed_experts = {NRoutedExperts} (got {NGroup})");
            Require(TopkGroup is > 0 && TopkGroup <= NGroup, $"topk_group must be in [1, n_group = {NGroup}] (got {TopkGroup})");
            if (TopkMethod == "noaux_tc" && NGroup > 1)
                Require(NRoutedExperts / NGroup >= 2, "noaux_tc group scoring needs at least 2 experts per group");
            Require(NumExpertsPerTok <= (NRoutedExperts / NGroup) * TopkGroup, "num_experts_per_tok exceeds the experts in the allowed groups");
            Dimension("n_shared_experts × moe_intermediate_size", (long)(NSharedExperts ?? 0) * MoeIntermediateSize);
        }
        if (RopeScaling is { } rs && rs.Type is not null)
        {
            Require(rs.Type is "yarn", $"rope_scaling type '{rs.Type}' is not supported (yarn)");
            FinitePositive("rope_scaling.factor", rs.Factor);
            Positive("rope_scaling.original_max_position_embeddings", rs.OriginalMaxPositionEmbeddings);
            FinitePositive("rope_scaling.beta_fast", rs.BetaFast);
            FinitePositive("rope_scaling.beta_slow", rs.BetaSlow);
            FiniteNonNegative("rope_scaling.mscale", rs.Mscale);
            FiniteNonNegative("rope_scaling.mscale_all_dim", rs.MscaleAllDim);
        }
        if (QuantizationConfig?.WeightBlockSize is { } block)
            Require(block is [> 0, > 0], $"quantization_config.weight_block_size must be two positive sizes (got [{string.Join(", ", block)}])");

        // Every weight dimension the keys imply (MLA's projections, the MTP eh_proj) must fit a tensor dimension.
        long heads = NumAttentionHeads;
        Dimension("num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim)", heads * ((long)QkNopeHeadDim + QkRopeHeadDim));
        Dimension("num_attention_heads × (qk_nope_head_dim + v_head_dim)", heads * ((long)QkNopeHeadDim + VHeadDim));
        Dimension("kv_lora_rank + qk_rope_head_dim", (long)KvLoraRank + QkRopeHeadDim);
        Dimension("2 × hidden_size", 2L * HiddenSize);
    }

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowReadingFromString | JsonNumberHandling.AllowNamedFloatingPointLiterals,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };
}

/// <summary>HF <c>rope_scaling</c> (YaRN).</summary>
public sealed record RopeScalingConfig
{
    [JsonPropertyName("type")] public string? Type { get; init; }
    [JsonPropertyName("rope_type")] public string? RopeType { init { Type ??= value; } get => null; }
    [JsonPropertyName("factor")] public float Factor { get; init; } = 1f;
    [JsonPropertyName("original_max_position_embeddings")] public int OriginalMaxPositionEmbeddings { get; init; }
    [JsonPropertyName("beta_fast")] public float BetaFast { get; init; } = 32f;
    [JsonPropertyName("beta_slow")] public float BetaSlow { get; init; } = 1f;
    [JsonPropertyName("mscale")] public float Mscale { get; init; } = 1f;
    [JsonPropertyName("mscale_all_dim")] public float MscaleAllDim { get; init; }
}

/// <summary>HF <c>quantization_config</c> of DeepSeek-V3's FP8 checkpoints.</summary>
public sealed record QuantizationConfig
{
    [JsonPropertyName("quant_method")] public string? QuantMethod { get; init; }
    [JsonPropertyName("fmt")] public string? Fmt { get; init; }
    [JsonPropertyName("activation_scheme")] public string? ActivationScheme { get; init; }
    [JsonPropertyName("weight_block_size")] public int[]? WeightBlockSize { get; init; }
}
