using System.Text.Json;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Reporting;

/// <summary>A metric over steps.</summary>
/// <param name="Steps">ascending [n]</param>
/// <param name="Values">[n]; NaN where missing</param>
internal sealed record Series(double[] Steps, double[] Values)
{
    public bool HasValues => Values.Any(double.IsFinite);

    public double LastFinite() => Values.LastOrDefault(double.IsFinite, double.NaN);
}

/// <summary>
/// What a run folder (<c>dss train</c>'s output) tells the report: its metrics, the resolved training config
/// (<c>train_config.json</c>), the model config of its newest checkpoint, and names for its MoE gates.
/// </summary>
internal sealed class RunHistory
{
    private RunHistory(string folder, string label, MetricsFile metrics)
    {
        Folder = folder;
        Label = label;
        Metrics = metrics;
    }

    public string Folder { get; }
    public string Label { get; }
    public MetricsFile Metrics { get; }

    /// <summary>train_config.json as key → value text, in file order; null when the run has none.</summary>
    public IReadOnlyList<KeyValuePair<string, string>>? TrainConfig { get; private init; }

    /// <summary>Why <see cref="TrainConfig"/> is null, or a problem with it.</summary>
    public string? TrainConfigNote { get; private init; }

    /// <summary>config.json of the newest checkpoint, as written, and where it came from.</summary>
    public (string Path, string Json)? ModelConfig { get; private init; }

    /// <summary>The newest checkpoint's model config, parsed, when it is valid.</summary>
    private DeepSeekConfig? Model { get; init; }

    /// <summary>One name per MoE gate in the order of the per-layer metrics (<c>layer 3</c>, ..., <c>MTP 1</c>).</summary>
    public IReadOnlyList<string> GateNames(int count) => Model is null ? DefaultGateNames(count) : GateNamesFrom(Model, count);

    public string? Config(string key) => TrainConfig?.FirstOrDefault(kv => kv.Key == key).Value;

    /// <summary>The training precision, or "?" when the run did not record it.</summary>
    public string Precision => Config("precision") ?? "?";

    public Series Train(string key) => Of(Metrics.Train, key);

    public Series Eval(string key) => Of(Metrics.Eval, key);

    /// <summary>Loads a run folder; a missing folder or metrics.jsonl is the user's error, anything else is drawn as far as it goes.</summary>
    public static RunHistory Load(string folder, string label)
    {
        if (!Directory.Exists(folder)) throw new DeepSeekSharpException($"{folder}: run folder not found");
        string metricsPath = Path.Combine(folder, "metrics.jsonl");
        if (!File.Exists(metricsPath)) throw new DeepSeekSharpException($"{metricsPath}: not found (is {folder} a dss train output folder?)");
        var (config, configNote) = ReadTrainConfig(Path.Combine(folder, DeepSeekSharp.Training.TrainConfig.RunFileName));
        var modelConfig = ReadModelConfig(folder);
        DeepSeekConfig? parsed = null;
        if (modelConfig is { } mc)
        {
            try { parsed = DeepSeekConfig.Parse(mc.Json, mc.Path); }
            catch (DeepSeekSharpException) { /* names fall back to gate numbers */ }
        }
        return new RunHistory(folder, label, MetricsFile.Read(metricsPath))
        {
            TrainConfig = config,
            TrainConfigNote = configNote,
            ModelConfig = modelConfig,
            Model = parsed,
        };
    }

    /// <summary>Gate names from the model config when its MoE layers (then MTP modules) number <paramref name="count"/>.</summary>
    internal static IReadOnlyList<string> GateNamesFrom(DeepSeekConfig config, int count)
    {
        if (!config.HasMoe) return DefaultGateNames(count);
        var layers = Enumerable.Range(0, config.NumHiddenLayers).Where(config.IsMoeLayer).Select(l => $"layer {l}").ToList();
        var names = layers.Concat(Enumerable.Range(1, config.NumNextnPredictLayers).Select(k => $"MTP {k}")).ToList();
        // Validation, and training without MTP, record the model's layers only.
        return names.Count == count ? names : layers.Count == count ? layers : DefaultGateNames(count);
    }

    private static List<string> DefaultGateNames(int count) => Enumerable.Range(0, count).Select(i => $"MoE gate {i}").ToList();

    private static Series Of(IReadOnlyList<MetricsRecord> records, string key)
    {
        var steps = new List<double>(records.Count);
        var values = new List<double>(records.Count);
        foreach (var r in records)
        {
            if (!r.Scalars.TryGetValue(key, out double v)) continue;
            steps.Add(r.Step);
            values.Add(v);
        }
        return new Series(steps.ToArray(), values.ToArray());
    }

    private static (IReadOnlyList<KeyValuePair<string, string>>?, string?) ReadTrainConfig(string path)
    {
        if (!File.Exists(path)) return (null, $"no {Path.GetFileName(path)} (the run predates it, or did not start)");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) return (null, $"{Path.GetFileName(path)} is not a JSON object");
            return (doc.RootElement.EnumerateObject()
                .Select(p => new KeyValuePair<string, string>(p.Name, p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText()))
                .ToList(), null);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            return (null, $"{Path.GetFileName(path)} could not be read: {e.Message}");
        }
    }

    private static (string Path, string Json)? ReadModelConfig(string folder)
    {
        try
        {
            string? checkpoint = CheckpointStore.Latest(folder);
            if (checkpoint is null) return null;
            string path = Path.Combine(checkpoint, "config.json");
            return File.Exists(path) ? (path, File.ReadAllText(path)) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
