namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Built-in configs, so the README's commands need no downloads.</summary>
public static class Presets
{
    /// <summary>
    /// A small DeepSeek-V3-shaped model (≈3M parameters): MLA with q LoRA, 1 dense + 3 MoE layers, 16 routed
    /// experts (top-4 in 2 of 4 groups, sigmoid + noaux_tc bias), 1 shared expert, one MTP depth.
    /// </summary>
    public const string TinyV3 = """
    {
      "architectures": ["DeepseekV3ForCausalLM"],
      "model_type": "deepseek_v3",
      "vocab_size": 512,
      "hidden_size": 128,
      "intermediate_size": 384,
      "moe_intermediate_size": 64,
      "num_hidden_layers": 4,
      "first_k_dense_replace": 1,
      "moe_layer_freq": 1,
      "num_attention_heads": 4,
      "num_key_value_heads": 4,
      "q_lora_rank": 64,
      "kv_lora_rank": 32,
      "qk_nope_head_dim": 32,
      "qk_rope_head_dim": 16,
      "v_head_dim": 32,
      "n_routed_experts": 16,
      "n_shared_experts": 1,
      "num_experts_per_tok": 4,
      "n_group": 4,
      "topk_group": 2,
      "scoring_func": "sigmoid",
      "topk_method": "noaux_tc",
      "norm_topk_prob": true,
      "routed_scaling_factor": 2.5,
      "num_nextn_predict_layers": 1,
      "max_position_embeddings": 512,
      "rope_theta": 10000,
      "rope_scaling": null,
      "rms_norm_eps": 1e-6,
      "initializer_range": 0.02,
      "hidden_act": "silu",
      "tie_word_embeddings": false,
      "attention_bias": false,
      "bos_token_id": 0,
      "eos_token_id": 1,
      "torch_dtype": "float32"
    }
    """;

    public static IReadOnlyDictionary<string, string> All { get; } = new Dictionary<string, string> { ["tiny-v3"] = TinyV3 };
}
