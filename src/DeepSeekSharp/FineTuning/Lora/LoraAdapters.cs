using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using DeepSeekSharp.IO;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>
/// The LoRA keys of a run (Axolotl's names): <c>lora_r</c>, <c>lora_alpha</c>, <c>lora_dropout</c>,
/// <c>lora_target_modules</c>, <c>lora_target_linear</c>, <c>peft_use_rslora</c>, <c>lora_modules_to_save</c>.
/// </summary>
public sealed record LoraSettings(int R, float Alpha, IReadOnlyList<string> TargetModules, bool TargetLinear = false, bool UseRslora = false,
    IReadOnlyList<string>? ModulesToSave = null, float Dropout = 0)
{
    public IReadOnlyList<string> SavedModules => ModulesToSave ?? [];
}

/// <summary>What applying LoRA did: the adapted Linears by HF module path and the parameter counts.</summary>
/// <param name="Dropout">the adapters' shared lora_dropout, which the training loop turns on per micro-batch</param>
public sealed record LoraApplyResult(IReadOnlyDictionary<string, LoraLinear> Adapters, long TrainableElements, long TotalElements, LoraDropout Dropout)
{
    public string Summary => $"LoRA on {Adapters.Count} Linear(s): {TrainableElements:N0} trainable parameters of {TotalElements:N0} "
        + $"({(double)TrainableElements / Math.Max(1, TotalElements):P3})";

    /// <summary>
    /// Linears that were stored compressed (FP8 blocks, BF16) and whose whole weight the adapter file replaced
    /// (modules_to_save): they now hold that weight in fp32, and Storage is how they were stored before.
    /// </summary>
    public IReadOnlyList<(Linear Linear, WeightStorage Storage)> WidenedFromCompressed { get; init; } = [];
}

/// <summary>
/// Applies LoRA to a <see cref="DeepSeekModel"/>, and writes and reads PEFT adapter folders (formats.md, PEFT):
/// <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> whose keys are
/// <c>base_model.model.&lt;HF module path&gt;.lora_A.weight</c> / <c>.lora_B.weight</c>, and, for
/// <c>modules_to_save</c>, <c>base_model.model.&lt;HF parameter name&gt;</c>.
/// </summary>
public static class LoraAdapters
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    private const string PeftPrefix = "base_model.model.";

    /// <summary>
    /// Whether a target entry selects the module at <paramref name="path"/>: the entry is a regex that must match whole
    /// dot-separated segments of the path, so <c>o_proj</c> selects every <c>…self_attn.o_proj</c>,
    /// <c>shared_experts</c> every Linear inside a shared expert, and <c>mlp.experts.*.gate_proj</c> the routed experts'
    /// gate projections (PEFT's "name ends with .target" rule is the special case of a last segment).
    /// </summary>
    public static bool Selects(string entry, string path) =>
        Regex.IsMatch(path, $"(^|\\.)(?:{entry})(\\.|$)", RegexOptions.CultureInvariant);

    /// <summary>Every Linear a LoRA adapter can go on (all but the output head; the router is a <see cref="Gate"/>, not a Linear).</summary>
    public static IEnumerable<(string Path, Linear Linear)> CandidateLinears(DeepSeekModel model) =>
        model.NamedModules().Where(m => m.Module is Linear l && !ReferenceEquals(l, model.LmHead)).Select(m => (m.Name, (Linear)m.Module));

    /// <summary>
    /// Freezes every base parameter, attaches A/B to the selected Linears (A Kaiming-uniform from <paramref name="seed"/>,
    /// B zero) and keeps the parameters of <c>lora_modules_to_save</c> trainable. Bad settings (r ≤ 0, dropout outside
    /// [0, 1), a target or saved module that matches nothing) are one-line errors.
    /// </summary>
    public static LoraApplyResult Apply(DeepSeekModel model, LoraSettings settings, int seed)
    {
        if (settings.R <= 0) throw new DeepSeekSharpException($"lora_r must be a positive integer (got {settings.R})");
        if (!(settings.Dropout >= 0 && settings.Dropout < 1))
            throw new DeepSeekSharpException($"lora_dropout must lie in [0, 1) (got {settings.Dropout.ToString(CultureInfo.InvariantCulture)})");
        if (!settings.TargetLinear && settings.TargetModules.Count == 0)
            throw new DeepSeekSharpException("adapter: lora needs lora_target_modules or lora_target_linear: true");
        var candidates = CandidateLinears(model).ToList();
        foreach (var entry in settings.TargetModules)
            if (!candidates.Any(c => Selects(entry, c.Path)))
                throw new DeepSeekSharpException($"lora_target_modules: '{entry}' matches no Linear of the model (paths look like {candidates[0].Path})");
        var targets = candidates.Where(c => settings.TargetLinear || settings.TargetModules.Any(e => Selects(e, c.Path))).ToList();
        return Attach(model, targets.Select(t => (t.Path, t.Linear, settings.R, settings.Alpha)).ToList(), settings.UseRslora, settings.SavedModules, new Random(seed),
            new LoraDropout(settings.Dropout));
    }

    private static LoraApplyResult Attach(DeepSeekModel model, List<(string Path, Linear Linear, int R, float Alpha)> targets, bool useRslora,
        IReadOnlyList<string> modulesToSave, Random rng, LoraDropout dropout)
    {
        foreach (var (_, p) in model.NamedParameters())
        {
            p.RequiresGrad = false;
            p.Grad = null;
        }
        var savedModulePaths = new HashSet<string>();
        foreach (var entry in modulesToSave)
        {
            var matched = model.NamedModules().Where(m => m.Name.Length > 0 && Selects(entry, m.Name)).ToList();
            if (matched.Count == 0) throw new DeepSeekSharpException($"lora_modules_to_save: '{entry}' matches no module of the model");
            foreach (var (name, module) in matched)
                foreach (var (_, p) in module.NamedParameters()) p.RequiresGrad = true;
        }
        var adapters = new Dictionary<string, LoraLinear>();
        foreach (var (path, linear, r, alpha) in targets)
        {
            var lora = new LoraLinear(linear.InFeatures, linear.OutFeatures, r, alpha, useRslora);
            lora.Initialize(rng);
            lora.Dropout = (dropout, path);
            linear.AttachAdapter(lora, [("lora_A.weight", lora.A), ("lora_B.weight", lora.B)]);
            adapters[path] = lora;
        }
        long trainable = 0, total = 0;
        foreach (var (_, p) in model.NamedParameters())
        {
            total += p.Length;
            if (p.RequiresGrad) trainable += p.Length;
        }
        return new LoraApplyResult(adapters, trainable, total, dropout);
    }

    /// <summary>The tensors of a PEFT adapter file: every LoRA A/B and every trainable non-LoRA parameter (modules_to_save).</summary>
    public static List<(string Name, int[] Shape, float[] Data)> AdapterTensors(DeepSeekModel model)
    {
        var list = new List<(string, int[], float[])>();
        foreach (var (name, p) in model.NamedParameters())
            if (p.RequiresGrad || name.EndsWith(".lora_A.weight", StringComparison.Ordinal) || name.EndsWith(".lora_B.weight", StringComparison.Ordinal))
                list.Add((PeftPrefix + name, (int[])p.Shape.Clone(), p.Span.ToArray()));
        return list;
    }

    /// <summary>Writes adapter_config.json and adapter_model.safetensors into <paramref name="dir"/> (a folder being assembled).</summary>
    public static void WriteFiles(DeepSeekModel model, string dir, LoraSettings settings, string? baseModel)
    {
        // The adapted paths themselves, not our segment regexes: PEFT reads a list as exact names or ".name" suffixes,
        // so HF PEFT selects exactly the modules that carry tensors in the file.
        var targets = new JsonArray();
        foreach (var (path, _) in CandidateLinears(model).Where(c => c.Linear.Adapter is LoraLinear)) targets.Add(path);
        var saved = new JsonArray();
        foreach (var m in settings.SavedModules) saved.Add(m);
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["r"] = settings.R,
            ["lora_alpha"] = settings.Alpha,
            ["lora_dropout"] = settings.Dropout,
            ["target_modules"] = targets,
            ["use_rslora"] = settings.UseRslora,
            ["base_model_name_or_path"] = baseModel,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["modules_to_save"] = settings.SavedModules.Count > 0 ? saved : null,
            ["rank_pattern"] = new JsonObject(),
            ["alpha_pattern"] = new JsonObject(),
            ["inference_mode"] = true,
        };
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        SafeTensorsWriter.WriteFloat32(Path.Combine(dir, WeightsFile), AdapterTensors(model), new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>
    /// Loads a PEFT adapter folder (ours or HF PEFT's) onto <paramref name="model"/>: each <c>lora_A</c>/<c>lora_B</c>
    /// pair goes on the Linear of its path with r from the tensors and α from <c>alpha_pattern</c> (a regex over the
    /// path, PEFT's rule) or <c>lora_alpha</c>; modules_to_save tensors replace the base's. Tensors that match no module
    /// of the model are one error listing them. Base parameters are frozen; the returned adapters are trainable.
    /// </summary>
    public static LoraApplyResult Load(DeepSeekModel model, string dir)
    {
        string configPath = Path.Combine(dir, ConfigFile), weightsPath = Path.Combine(dir, WeightsFile);
        JsonObject config;
        try { config = JsonNode.Parse(InputFile.ReadAllText(configPath, "adapter config"))?.AsObject() ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new DeepSeekSharpException($"{configPath}: invalid JSON ({e.Message})"); }
        string? peftType = config["peft_type"]?.GetValue<string>();
        if (peftType != "LORA") throw new DeepSeekSharpException($"{configPath}: peft_type is '{peftType}', only LORA is supported");
        if (config["fan_in_fan_out"]?.GetValue<bool>() == true) throw new DeepSeekSharpException($"{configPath}: fan_in_fan_out: true is not supported (DeepSeek's Linears are [out, in])");
        if (config["bias"]?.GetValue<string>() is { } bias && bias != "none") throw new DeepSeekSharpException($"{configPath}: bias '{bias}' is not supported (only none)");
        float alpha = config["lora_alpha"]?.GetValue<float>() ?? 8;
        bool rslora = config["use_rslora"]?.GetValue<bool>() ?? false;
        float dropout = config["lora_dropout"]?.GetValue<float>() ?? 0;
        if (!(dropout >= 0 && dropout < 1)) throw new DeepSeekSharpException($"{configPath}: lora_dropout {dropout.ToString(CultureInfo.InvariantCulture)} is outside [0, 1)");
        var alphaPattern = (config["alpha_pattern"] as JsonObject)?.Select(kv => (Key: kv.Key, Value: kv.Value!.GetValue<float>())).ToList() ?? [];
        if (!File.Exists(weightsPath)) throw new DeepSeekSharpException($"{weightsPath}: missing");
        using var reader = SafeTensorsReader.Open(weightsPath);
        var linears = CandidateLinears(model).ToDictionary(c => c.Path, c => c.Linear);
        var parameters = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        var unmatched = new List<string>();
        var loraPaths = new List<string>();
        var fullTensors = new List<(string Key, Parameter Target)>();
        foreach (var entry in reader.Tensors)
        {
            string name = entry.Name.StartsWith(PeftPrefix, StringComparison.Ordinal) ? entry.Name[PeftPrefix.Length..] : entry.Name;
            name = name.Replace(".default.weight", ".weight", StringComparison.Ordinal);
            if (name.EndsWith(".lora_A.weight", StringComparison.Ordinal) || name.EndsWith(".lora_B.weight", StringComparison.Ordinal))
            {
                string path = name[..^".lora_A.weight".Length];
                if (!linears.TryGetValue(path, out var linear)) unmatched.Add(entry.Name);
                else if (name.EndsWith(".lora_A.weight", StringComparison.Ordinal)) loraPaths.Add(path);
                if (linear is not null && linear.Adapter is not null) throw new DeepSeekSharpException($"{weightsPath}: {path} already has an adapter");
            }
            else if (parameters.TryGetValue(name.Replace(".modules_to_save.weight", ".weight", StringComparison.Ordinal), out var p)) fullTensors.Add((entry.Name, p));
            else unmatched.Add(entry.Name);
        }
        if (unmatched.Count > 0)
            throw new DeepSeekSharpException($"{weightsPath}: {unmatched.Count} tensor(s) match no module of the model: {string.Join(", ", unmatched.Take(20))}{(unmatched.Count > 20 ? ", …" : "")}");
        var targets = new List<(string, Linear, int, float)>();
        var readers = new List<(string Path, string AKey, string BKey)>();
        foreach (var path in loraPaths)
        {
            string aKey = FindKey(reader, path, "lora_A"), bKey = FindKey(reader, path, "lora_B");
            if (bKey.Length == 0) throw new DeepSeekSharpException($"{weightsPath}: {path} has lora_A but no lora_B");
            int r = reader.Get(aKey).Shape[0];
            float a = alpha;
            foreach (var (pattern, value) in alphaPattern)
                if (Regex.IsMatch(path, $"(^|\\.)(?:{pattern})$", RegexOptions.CultureInvariant)) a = value;
            targets.Add((path, linears[path], r, a));
            readers.Add((path, aKey, bKey));
        }
        var result = Attach(model, targets, rslora, [], new Random(0), new LoraDropout(dropout));
        foreach (var (path, aKey, bKey) in readers)
        {
            var lora = result.Adapters[path];
            ReadInto(reader, weightsPath, aKey, lora.A);
            ReadInto(reader, weightsPath, bKey, lora.B);
        }
        // A modules_to_save tensor replaces a whole weight. Over a compressed base that weight has no fp32 copy yet: it
        // gets one (the saved tensor is trained in fp32), and the caller learns which Linears changed storage.
        var compressedByWeight = model.NamedModules().Select(m => m.Module).OfType<Linear>().Where(l => l.InferenceWeight is not null)
            .ToDictionary<Linear, Parameter, Linear>(l => l.Weight, l => l, ReferenceEqualityComparer.Instance);
        var widened = new List<(Linear, WeightStorage)>();
        var embedding = model.Inner.EmbedTokens;
        foreach (var (key, p) in fullTensors)
        {
            if (compressedByWeight.TryGetValue(p, out var linear))
            {
                widened.Add((linear, linear.InferenceWeight!.Storage));
                linear.InferenceWeight = null;
                p.Materialize();
            }
            else if (ReferenceEquals(p, embedding.Weight) && embedding.InferenceWeight is not null)
            {
                embedding.InferenceWeight = null;                 // a trained embedding: kept in fp32 from here on
                p.Materialize();
            }
            ReadInto(reader, weightsPath, key, p);
            p.RequiresGrad = true;
        }
        return result with { WidenedFromCompressed = widened };
    }

    private static string FindKey(SafeTensorsReader reader, string path, string which)
    {
        foreach (var key in new[] { $"{PeftPrefix}{path}.{which}.weight", $"{path}.{which}.weight", $"{PeftPrefix}{path}.{which}.default.weight" })
            if (reader.TryGet(key, out _)) return key;
        return "";
    }

    private static void ReadInto(SafeTensorsReader reader, string file, string key, Parameter p)
    {
        var entry = reader.Get(key);
        if (!entry.Shape.SequenceEqual(p.Shape))
            throw new DeepSeekSharpException($"{file}: '{key}' has shape [{string.Join(", ", entry.Shape)}], the model expects [{string.Join(", ", p.Shape)}]");
        reader.ReadAsFloat32(key, p.Span);
    }
}
