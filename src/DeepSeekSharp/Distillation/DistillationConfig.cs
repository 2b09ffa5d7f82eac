using System.Globalization;
using System.Text.Json;
using YamlDotNet.RepresentationModel;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// The training YAML's <c>distillation:</c> mapping (docs/config.md): <c>teacher: DIR</c> (online: the teacher runs beside the
/// student), <c>teacher_url: URL</c> (online: a teacher served by <c>dss serve</c> or vLLM, its top <c>kd_online_topk</c>
/// per position) or <c>logits: DIR</c> (offline: a <c>dss distill dump</c> folder), and the loss's Axolotl-named settings.
/// </summary>
/// <param name="KdTopK">with <c>teacher</c>: <c>kd_top_k</c> (null: the full vocabulary); with <c>teacher_url</c>: <c>kd_online_topk</c></param>
/// <param name="KdOnlineTimeout">seconds a served teacher may take to answer one batch (Axolotl's <c>kd_online_timeout</c>)</param>
public sealed record DistillationConfig(string? Teacher, string? Logits, float KdAlpha, float? KdCeAlpha, float KdTemperature, int? KdTopK, TopKTail KdTail,
    string? TeacherUrl = null, int KdOnlineTimeout = 120, float KdBeta = 0f)
{
    public static readonly string[] Keys =
        ["teacher", "teacher_url", "logits", "kd_alpha", "kd_ce_alpha", "kd_temperature", "kd_top_k", "kd_online_topk", "kd_online_timeout", "kd_tail", "kd_beta"];

    /// <summary>The loss these settings describe (kd_ce_alpha defaults to 1 − kd_alpha).</summary>
    public DistillationLoss Loss => new(KdAlpha, KdCeAlpha ?? 1f - KdAlpha, KdTemperature, KdTail, KdBeta);

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
        int? Positive(string key) => values.TryGetValue(key, out var kv)
            ? int.TryParse(kv, NumberStyles.Integer, CultureInfo.InvariantCulture, out int k) && k > 0 ? k : throw new DeepSeekSharpException($"{source}: distillation.{key} must be a positive integer (got '{kv}')")
            : null;
        string? url = values.GetValueOrDefault("teacher_url");
        if (url is null && values.ContainsKey("kd_online_topk"))
            throw new DeepSeekSharpException($"{source}: distillation.kd_online_topk is for a served teacher (teacher_url); an in-process teacher takes kd_top_k");
        if (url is not null && values.ContainsKey("kd_top_k"))
            throw new DeepSeekSharpException($"{source}: a served teacher (teacher_url) takes kd_online_topk, not kd_top_k");
        if (url is not null && !values.ContainsKey("kd_online_topk"))
            throw new DeepSeekSharpException($"{source}: distillation.teacher_url needs kd_online_topk (the log-probabilities per position to request)");
        int? topK = Positive(url is null ? "kd_top_k" : "kd_online_topk");
        var tail = values.GetValueOrDefault("kd_tail", "renormalize") switch
        {
            "renormalize" => TopKTail.Renormalize,
            "bucket" => TopKTail.Bucket,
            var other => throw new DeepSeekSharpException($"{source}: distillation.kd_tail must be renormalize or bucket (got '{other}')"),
        };
        var cfg = new DistillationConfig(values.GetValueOrDefault("teacher"), values.GetValueOrDefault("logits"), Float("kd_alpha", 0.5f),
            values.ContainsKey("kd_ce_alpha") ? Float("kd_ce_alpha", 0) : null, Float("kd_temperature", 1f), topK, tail, url, Positive("kd_online_timeout") ?? 120, Float("kd_beta", 0f));
        if ((cfg.Teacher is null ? 0 : 1) + (cfg.TeacherUrl is null ? 0 : 1) + (cfg.Logits is null ? 0 : 1) != 1)
            throw new DeepSeekSharpException($"{source}: distillation needs exactly one of teacher: DIR (online), teacher_url: URL (a served teacher) or logits: DIR (offline dump)");
        if (cfg.Logits is not null && topK is not null)
            throw new DeepSeekSharpException($"{source}: distillation.kd_top_k is for an online teacher; an offline dump has its own k");
        cfg.Loss.Validate($"{source}: distillation");
        bool topKTeacher = cfg.Logits is not null || cfg.TeacherUrl is not null || cfg.KdTopK is not null;
        if (cfg.KdBeta > 0 && topKTeacher && tail != TopKTail.Bucket)
            throw new DeepSeekSharpException($"{source}: distillation.kd_beta > 0 with a top-k teacher needs kd_tail: bucket (with renormalize the student's top-k side is not a distribution)");
        return cfg;
    }

    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject("distillation");
        if (Teacher is not null) w.WriteString("teacher", Teacher);
        if (TeacherUrl is not null) w.WriteString("teacher_url", TeacherUrl);
        if (Logits is not null) w.WriteString("logits", Logits);
        w.WriteNumber("kd_alpha", KdAlpha);
        if (KdCeAlpha is { } ce) w.WriteNumber("kd_ce_alpha", ce);
        w.WriteNumber("kd_temperature", KdTemperature);
        if (KdTopK is { } k) w.WriteNumber(TeacherUrl is null ? "kd_top_k" : "kd_online_topk", k);
        if (TeacherUrl is not null) w.WriteNumber("kd_online_timeout", KdOnlineTimeout);
        w.WriteString("kd_tail", KdTail == TopKTail.Bucket ? "bucket" : "renormalize");
        if (KdBeta != 0) w.WriteNumber("kd_beta", KdBeta);
        w.WriteEndObject();
    }
}
