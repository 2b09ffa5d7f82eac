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

    public bool IsV2 => ModelType == "deepseek_v2";

    public bool HasQLora => QLoraRank is > 0;

    public bool HasMoe => NRoutedExperts is > 0;

    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;

    /// <summary>Dense SwiGLU for l &lt; first_k_dense_replace, else MoE when l % moe_layer_freq == 0 (model.md).</summary>
    public bool IsMoeLayer(int layer) => HasMoe && layer >= FirstKDenseReplace && layer % Math.Max(1, MoeLayerFreq) == 0;

    public static DeepSeekConfig Load(string path)
    {
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: config file not found");
        string text;
        try { text = File.ReadAllText(path); }
        catch (IOException e) { throw new DeepSeekSharpException($"{path}: cannot read config ({e.Message})"); }
        return Parse(text, path);
    }

    public static DeepSeekConfig Parse(string json, string sourceName = "config.json")
    {
        DeepSeekConfig? cfg;
        try { cfg = JsonSerializer.Deserialize<DeepSeekConfig>(json, JsonOptions); }
        catch (JsonException e) { throw new DeepSeekSharpException($"{sourceName}: invalid config JSON ({e.Message.Split('\n')[0]})"); }
        if (cfg is null) throw new DeepSeekSharpException($"{sourceName}: config is empty");
        cfg = cfg.ApplyDefaults();
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

    private void Validate(string src)
    {
        void Require(bool ok, string what) { if (!ok) throw new DeepSeekSharpException($"{src}: {what}"); }
        Require(ModelType is "deepseek_v3" or "deepseek_v2", $"unsupported model_type '{ModelType}' (expected deepseek_v3 or deepseek_v2)");
        Require(VocabSize > 0 && HiddenSize > 0 && NumHiddenLayers >= 0 && NumAttentionHeads > 0, "vocab_size, hidden_size and num_attention_heads must be positive");
        Require(KvLoraRank > 0 && QkNopeHeadDim >= 0 && VHeadDim > 0, "kv_lora_rank and v_head_dim must be positive");
        Require(QkRopeHeadDim > 0 && QkRopeHeadDim % 2 == 0, "qk_rope_head_dim must be a positive even number");
        Require(HiddenAct == "silu", $"hidden_act '{HiddenAct}' is not supported (only silu)");
        Require(!AttentionBias, "attention_bias = true is not supported by the DeepSeek family");
        Require(!TieWordEmbeddings, "tie_word_embeddings = true is not supported (DeepSeek never ties)");
        Require(NumNextnPredictLayers >= 0, "num_nextn_predict_layers must be ≥ 0");
        Require(IntermediateSize > 0 || FirstKDenseReplace == 0, "intermediate_size must be positive");
        if (HasMoe)
        {
            Require(MoeIntermediateSize > 0, "moe_intermediate_size must be positive");
            Require(NumExpertsPerTok is > 0 && NumExpertsPerTok <= NRoutedExperts, "num_experts_per_tok must be in [1, n_routed_experts]");
            Require(ScoringFunc is "sigmoid" or "softmax", $"scoring_func '{ScoringFunc}' is not supported (sigmoid or softmax)");
            Require(TopkMethod is "noaux_tc" or "greedy" or "group_limited_greedy", $"topk_method '{TopkMethod}' is not supported");
            Require(NGroup is > 0 && NRoutedExperts % NGroup == 0, "n_routed_experts must be divisible by n_group");
            Require(TopkGroup is > 0 && TopkGroup <= NGroup, "topk_group must be in [1, n_group]");
            if (TopkMethod == "noaux_tc" && NGroup > 1)
                Require(NRoutedExperts / NGroup >= 2, "noaux_tc group scoring needs at least 2 experts per group");
            Require(NumExpertsPerTok <= (NRoutedExperts / NGroup) * TopkGroup, "num_experts_per_tok exceeds the experts in the allowed groups");
        }
        if (RopeScaling is { } rs && rs.Type is not null)
        {
            Require(rs.Type is "yarn", $"rope_scaling type '{rs.Type}' is not supported (yarn)");
            Require(rs.Factor > 0 && rs.OriginalMaxPositionEmbeddings > 0, "rope_scaling needs factor and original_max_position_embeddings");
        }
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
