using System.Globalization;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>
/// Which parts of a model an ESFT run trains, in the format of DeepSeek's ESFT release
/// (<c>results/expert_configs/&lt;task&gt;.json</c>, the <c>expert_cfg.json</c> of its adapters):
/// <c>{"experts": {"&lt;HF layer&gt;": [expert ids in selection order], ...}, "shared_experts": false, "non_expert_modules": false}</c>.
/// Layers absent from <c>experts</c> train no routed expert.
/// </summary>
/// <param name="Experts">per MoE layer (HF index), the routed experts that train, in the order they were selected;
/// layers keep the order of the file they came from</param>
/// <param name="SharedExperts">the shared experts of every MoE layer train too</param>
/// <param name="NonExpertModules">everything outside the experts trains too: embeddings, attention, norms, routers and
/// their balancing biases, dense MLPs, the output head</param>
public sealed record ExpertConfig(IReadOnlyList<KeyValuePair<int, int[]>> Experts, bool SharedExperts = false, bool NonExpertModules = false)
{
    /// <summary>How many routed experts train, over all layers.</summary>
    public int SelectedCount => Experts.Sum(l => l.Value.Length);

    /// <summary>The experts of <paramref name="layer"/> that train (empty when the layer is not listed).</summary>
    public IReadOnlyList<int> ExpertsOf(int layer)
    {
        foreach (var (l, ids) in Experts) if (l == layer) return ids;
        return [];
    }

    /// <summary>
    /// The JSON exactly as the ESFT release's script writes it (Python's <c>json.dump</c> defaults: ", " and ": "
    /// separators, no indentation, no trailing newline), so configs chosen from the same scores compare byte for byte.
    /// </summary>
    public string ToJson()
    {
        var sb = new StringBuilder("{\"experts\": {");
        for (int i = 0; i < Experts.Count; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append('"').Append(Experts[i].Key.ToString(CultureInfo.InvariantCulture)).Append("\": [");
            sb.AppendJoin(", ", Experts[i].Value.Select(e => e.ToString(CultureInfo.InvariantCulture)));
            sb.Append(']');
        }
        sb.Append("}, \"shared_experts\": ").Append(SharedExperts ? "true" : "false");
        sb.Append(", \"non_expert_modules\": ").Append(NonExpertModules ? "true" : "false").Append('}');
        return sb.ToString();
    }

    public void Write(string path) => IO.AtomicFile.WriteAllText(path, ToJson());

    /// <summary>Reads an expert config; anything not of the format is one error line naming <paramref name="path"/>.</summary>
    public static ExpertConfig Read(string path)
    {
        string text = IO.InputFile.ReadAllText(path, "expert config");
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("experts", out var experts) || experts.ValueKind != JsonValueKind.Object)
                throw new DeepSeekSharpException($"{path}: not an ESFT expert config (expected {{\"experts\": {{\"<layer>\": [ids]}}, \"shared_experts\": …, \"non_expert_modules\": …}})");
            var layers = new List<KeyValuePair<int, int[]>>();
            foreach (var layer in experts.EnumerateObject())
            {
                int index = ScoreKeys.Index(layer.Name, path, "layer");
                if (layers.Any(l => l.Key == index)) throw new DeepSeekSharpException($"{path}: layer {index} is listed twice");
                if (layer.Value.ValueKind != JsonValueKind.Array) throw new DeepSeekSharpException($"{path}: experts of layer {layer.Name} must be a list of expert ids");
                var ids = layer.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 ? id
                    : throw new DeepSeekSharpException($"{path}: layer {layer.Name}: '{e}' is not an expert id")).ToArray();
                if (ids.Distinct().Count() != ids.Length) throw new DeepSeekSharpException($"{path}: layer {layer.Name} lists an expert twice");
                layers.Add(new(index, ids));
            }
            return new ExpertConfig(layers, Flag(root, "shared_experts", path), Flag(root, "non_expert_modules", path));
        }
        catch (JsonException e) { throw new DeepSeekSharpException($"{path}: invalid JSON ({e.Message})"); }
    }

    private static bool Flag(JsonElement root, string key, string path) => !root.TryGetProperty(key, out var v) ? false : v.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False or JsonValueKind.Null => false,
        _ => throw new DeepSeekSharpException($"{path}: '{key}' must be true or false"),
    };

    /// <summary>
    /// Checks the config against the model it is for: every listed layer is an MoE layer of the model (its decoder or
    /// MTP layers), every expert id is below n_routed_experts. One error line naming <paramref name="source"/>.
    /// </summary>
    public void Validate(DeepSeekConfig model, string source)
    {
        var moe = MoeLayers(model).ToHashSet();
        int experts = model.NRoutedExperts ?? 0;
        foreach (var (layer, ids) in Experts)
        {
            if (!moe.Contains(layer))
                throw new DeepSeekSharpException($"{source}: layer {layer} is not an MoE layer of the model (MoE layers: {Ranges(moe.Order())})");
            foreach (int id in ids)
                if (id >= experts) throw new DeepSeekSharpException($"{source}: layer {layer}: expert {id} is out of range (the model has {experts} routed experts per layer, ids 0..{experts - 1})");
        }
    }

    /// <summary>The HF indices of the model's MoE layers: decoder layers first, then the MTP layers (all MoE when the model is).</summary>
    public static IEnumerable<int> MoeLayers(DeepSeekConfig c)
    {
        for (int l = 0; l < c.NumHiddenLayers; l++) if (c.IsMoeLayer(l)) yield return l;
        if (c.HasMoe) for (int k = 0; k < c.NumNextnPredictLayers; k++) yield return c.NumHiddenLayers + k;
    }

    /// <summary>"1-26" for a run of consecutive layers, "1-3, 5" otherwise.</summary>
    internal static string Ranges(IEnumerable<int> sorted)
    {
        var parts = new List<string>();
        int? start = null, prev = null;
        foreach (int v in sorted.Append(int.MinValue))
        {
            if (start is not null && v != prev + 1)
            {
                parts.Add(start == prev ? $"{start}" : $"{start}-{prev}");
                start = null;
            }
            start ??= v;
            prev = v;
        }
        return parts.Count == 0 ? "none" : string.Join(", ", parts);
    }
}

/// <summary>The integer keys of ESFT's JSON files ("&lt;layer&gt;", "&lt;expert&gt;").</summary>
internal static class ScoreKeys
{
    public static int Index(string key, string path, string what) =>
        int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v : throw new DeepSeekSharpException($"{path}: '{key}' is not a {what} index");
}
