using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>One layer's scores: per routed expert, in the order its file listed them (ties in selection keep that order).</summary>
/// <param name="Layer">HF layer index</param>
/// <param name="Experts">expert ids in file order (a permutation of 0..E−1)</param>
/// <param name="Scores">score of <c>Experts[j]</c> at j</param>
public sealed record LayerScores(int Layer, int[] Experts, double[] Scores)
{
    /// <summary>Scores indexed by expert id.</summary>
    public double[] ByExpert()
    {
        var byId = new double[Experts.Length];
        for (int j = 0; j < Experts.Length; j++) byId[Experts[j]] = Scores[j];
        return byId;
    }

    public static LayerScores Ordered(int layer, double[] byExpert) => new(layer, Enumerable.Range(0, byExpert.Length).ToArray(), byExpert);
}

/// <summary>
/// ESFT's expert relevance scores (training.md, ESFT) per MoE layer and routed expert, in the layout of the ESFT
/// release's <c>results/expert_scores/&lt;task&gt;/summary.json</c>:
/// <c>{"token_scores": {"&lt;layer&gt;": {"&lt;expert&gt;": s, ...}, ...}, "gate_scores": {...}}</c>.
/// </summary>
/// <param name="Token">ESFT-Token: the share of the layer's top-k slots that went to each expert</param>
/// <param name="Gate">ESFT-Gate: each expert's mean routing weight per token</param>
/// <param name="Sequences">sequences scored (0 when read from a file that does not say)</param>
/// <param name="Tokens">tokens counted over them</param>
public sealed record ExpertScores(IReadOnlyList<LayerScores> Token, IReadOnlyList<LayerScores> Gate, int Sequences = 0, long Tokens = 0)
{
    public const string TokenKey = "token_scores", GateKey = "gate_scores";

    /// <summary>The table of a selection method: token or gate.</summary>
    public IReadOnlyList<LayerScores> Of(string method) => method switch
    {
        "token" => Token,
        "gate" => Gate,
        _ => throw new DeepSeekSharpException($"--method: '{method}' must be token or gate"),
    };

    /// <summary>Writes the summary layout, layers and experts in ascending order, every score in full (round-trip) precision;
    /// the counts go under a "sampled" key the release's readers ignore.</summary>
    public void Write(string path)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            foreach (var (key, table) in new[] { (TokenKey, Token), (GateKey, Gate) })
            {
                w.WriteStartObject(key);
                foreach (var layer in table.OrderBy(l => l.Layer))
                {
                    w.WriteStartObject(layer.Layer.ToString(CultureInfo.InvariantCulture));
                    var byId = layer.ByExpert();
                    for (int e = 0; e < byId.Length; e++) w.WriteNumber(e.ToString(CultureInfo.InvariantCulture), byId[e]);
                    w.WriteEndObject();
                }
                w.WriteEndObject();
            }
            w.WriteStartObject("sampled");
            w.WriteNumber("sequences", Sequences);
            w.WriteNumber("tokens", Tokens);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        IO.AtomicFile.WriteAllText(path, System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
    }

    /// <summary>
    /// Reads a score file (ours or the ESFT release's summary.json). Every layer of a table must list the experts
    /// 0..E−1 once each, with the same E in every layer; anything else is one error line naming <paramref name="path"/>.
    /// </summary>
    public static ExpertScores Read(string path)
    {
        string text = IO.InputFile.ReadAllText(path, "score file");
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new DeepSeekSharpException($"{path}: not an ESFT score file (expected {{\"token_scores\": …, \"gate_scores\": …}})");
            var token = Table(root, TokenKey, path);
            var gate = Table(root, GateKey, path);
            int sequences = 0;
            long tokens = 0;
            if (root.TryGetProperty("sampled", out var sampled) && sampled.ValueKind == JsonValueKind.Object)
            {
                if (sampled.TryGetProperty("sequences", out var s) && s.TryGetInt32(out int sv)) sequences = sv;
                if (sampled.TryGetProperty("tokens", out var t) && t.TryGetInt64(out long tv)) tokens = tv;
            }
            return new ExpertScores(token, gate, sequences, tokens);
        }
        catch (JsonException e) { throw new DeepSeekSharpException($"{path}: invalid JSON ({e.Message})"); }
    }

    private static List<LayerScores> Table(JsonElement root, string key, string path)
    {
        if (!root.TryGetProperty(key, out var table) || table.ValueKind != JsonValueKind.Object)
            throw new DeepSeekSharpException($"{path}: '{key}' is missing (an ESFT score file has token_scores and gate_scores, each {{\"<layer>\": {{\"<expert>\": score}}}})");
        var layers = new List<LayerScores>();
        int? expertCount = null;
        int? firstLayer = null;
        foreach (var layer in table.EnumerateObject())
        {
            int index = ScoreKeys.Index(layer.Name, path, "layer");
            if (layer.Value.ValueKind != JsonValueKind.Object) throw new DeepSeekSharpException($"{path}: {key}.{layer.Name} must map expert ids to scores");
            var ids = new List<int>();
            var scores = new List<double>();
            foreach (var expert in layer.Value.EnumerateObject())
            {
                ids.Add(ScoreKeys.Index(expert.Name, path, "expert"));
                scores.Add(expert.Value.ValueKind == JsonValueKind.Number && expert.Value.TryGetDouble(out double s) && double.IsFinite(s) ? s
                    : throw new DeepSeekSharpException($"{path}: {key}.{layer.Name}.{expert.Name}: '{expert.Value}' is not a finite number"));
            }
            var seen = new bool[ids.Count];
            foreach (int id in ids)
            {
                if (id >= ids.Count || seen[id])
                    throw new DeepSeekSharpException($"{path}: {key}.{layer.Name}: the experts must be 0..{ids.Count - 1}, each once (found '{id}')");
                seen[id] = true;
            }
            if (expertCount is int count && count != ids.Count)
                throw new DeepSeekSharpException($"{path}: {key}.{layer.Name} has {ids.Count} experts, layer {firstLayer} has {count}");
            expertCount ??= ids.Count;
            firstLayer ??= index;
            if (layers.Any(l => l.Layer == index)) throw new DeepSeekSharpException($"{path}: {key}: layer {index} is listed twice");
            layers.Add(new LayerScores(index, [.. ids], [.. scores]));
        }
        if (layers.Count == 0) throw new DeepSeekSharpException($"{path}: '{key}' lists no layer");
        return layers;
    }

    /// <summary>
    /// Checks the scores against the model they are to select for: every layer an MoE layer of the model, with
    /// n_routed_experts experts. One error line naming <paramref name="path"/>.
    /// </summary>
    public void Validate(DeepSeekConfig model, string path)
    {
        var moe = ExpertConfig.MoeLayers(model).ToHashSet();
        int experts = model.NRoutedExperts ?? 0;
        foreach (var (key, table) in new[] { (TokenKey, Token), (GateKey, Gate) })
            foreach (var layer in table)
            {
                if (!moe.Contains(layer.Layer))
                    throw new DeepSeekSharpException($"{path}: {key}: layer {layer.Layer} is not an MoE layer of the model (MoE layers: {ExpertConfig.Ranges(moe.Order())})");
                if (layer.Experts.Length != experts)
                    throw new DeepSeekSharpException($"{path}: {key}.{layer.Layer} scores {layer.Experts.Length} experts; the model has {experts} routed experts per layer");
            }
    }
}
