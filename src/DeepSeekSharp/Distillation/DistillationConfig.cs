using System.Globalization;
using System.Text.Json;
using YamlDotNet.RepresentationModel;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// The training YAML's <c>distillation:</c> mapping (docs/config.md): <c>teacher: DIR</c> (online: the teacher runs beside the
/// student) or <c>logits: DIR</c> (offline: a <c>dss distill dump</c> folder), and the loss's Axolotl-named settings.
/// </summary>
public sealed record DistillationConfig(string? Teacher, string? Logits, float KdAlpha, float? KdCeAlpha, float KdTemperature, int? KdTopK, TopKTail KdTail)
{
    public static readonly string[] Keys = ["teacher", "logits", "kd_alpha", "kd_ce_alpha", "kd_temperature", "kd_top_k", "kd_tail"];

    /// <summary>The loss these settings describe (kd_ce_alpha defaults to 1 − kd_alpha).</summary>
    public DistillationLoss Loss => new(KdAlpha, KdCeAlpha ?? 1f - KdAlpha, KdTemperature, KdTail);

    /// <summary>Reads the mapping; a null value means no distillation. Errors name <paramref name="source"/>.</summary>
    public static DistillationConfig? Parse(YamlNode node, string source)
    {
        if (node is YamlScalarNode s && (string.IsNullOrEmpty(s.Value) || s.Value is "null" or "~")) return null;
        if (node is not YamlMappingNode m) throw new DeepSeekSharpException($"{source}: 'distillation' must be a mapping ({{teacher: DIR}} or {{logits: DIR}})");
        var values = new Dictionary<string, string>();
        foreach (var (keyNode, v) in m.Children)
        {
            string key = (keyNode as YamlScalarNode)?.Value ?? "";
            if (!Keys.Contains(key)) throw new DeepSeekSharpException($"{source}: unknown distillation key '{key}' (known: {string.Join(", ", Keys)})");
            if (v is not YamlScalarNode { Value: { } value }) throw new DeepSeekSharpException($"{source}: distillation.{key} must be a single value");
            if (value is not ("null" or "~" or "")) values[key] = value;
        }
        float Float(string key, float fallback) => values.TryGetValue(key, out var v)
            ? float.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) ? f : throw new DeepSeekSharpException($"{source}: distillation.{key} must be a number (got '{v}')")
            : fallback;
        int? topK = values.TryGetValue("kd_top_k", out var kv)
            ? int.TryParse(kv, NumberStyles.Integer, CultureInfo.InvariantCulture, out int k) && k > 0 ? k : throw new DeepSeekSharpException($"{source}: distillation.kd_top_k must be a positive integer (got '{kv}')")
            : null;
        var tail = values.GetValueOrDefault("kd_tail", "renormalize") switch
        {
            "renormalize" => TopKTail.Renormalize,
            "bucket" => TopKTail.Bucket,
            var other => throw new DeepSeekSharpException($"{source}: distillation.kd_tail must be renormalize or bucket (got '{other}')"),
        };
        var cfg = new DistillationConfig(values.GetValueOrDefault("teacher"), values.GetValueOrDefault("logits"), Float("kd_alpha", 0.5f),
            values.ContainsKey("kd_ce_alpha") ? Float("kd_ce_alpha", 0) : null, Float("kd_temperature", 1f), topK, tail);
        if ((cfg.Teacher is null) == (cfg.Logits is null))
            throw new DeepSeekSharpException($"{source}: distillation needs exactly one of teacher: DIR (online) or logits: DIR (offline dump)");
        if (cfg.Logits is not null && topK is not null)
            throw new DeepSeekSharpException($"{source}: distillation.kd_top_k is for an online teacher; an offline dump has its own k");
        cfg.Loss.Validate($"{source}: distillation");
        return cfg;
    }

    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject("distillation");
        if (Teacher is not null) w.WriteString("teacher", Teacher);
        if (Logits is not null) w.WriteString("logits", Logits);
        w.WriteNumber("kd_alpha", KdAlpha);
        if (KdCeAlpha is { } ce) w.WriteNumber("kd_ce_alpha", ce);
        w.WriteNumber("kd_temperature", KdTemperature);
        if (KdTopK is { } k) w.WriteNumber("kd_top_k", k);
        w.WriteString("kd_tail", KdTail == TopKTail.Bucket ? "bucket" : "renormalize");
        w.WriteEndObject();
    }
}
