using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests;

/// <summary>Randomly initialised models small enough for decoding tests to run in a second.</summary>
internal static class TinyModels
{
    /// <summary>tiny-v3 narrowed to hidden 64 with the byte tokenizer's 264 ids (264 ≥ 258, a multiple of 8).</summary>
    public static DeepSeekModel ByteVocabulary(int context, int seed)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        node["vocab_size"] = 264;
        node["hidden_size"] = 64;
        node["intermediate_size"] = 128;
        node["max_position_embeddings"] = context;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(model, seed);
        return model;
    }
}
