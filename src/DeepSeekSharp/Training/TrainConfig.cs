using System.Globalization;
using System.Reflection;
using YamlDotNet.RepresentationModel;

namespace DeepSeekSharp.Training;

/// <summary>One entry of <c>datasets:</c>. The keys after <c>path</c> and <c>type</c> are Axolotl's, read by the fine-tuning
/// data (<see cref="FineTuning.SftDatasets"/>); docs/fine-tuning.md lists their defaults.</summary>
public sealed record DatasetSpec(string Path, string? Type = null)
{
    /// <summary>The dataset keys a <c>datasets:</c> entry may have.</summary>
    public static readonly string[] Keys = ["path", "type", "field_messages", "message_property_mappings", "roles_to_train", "train_on_eos", "roles", "field", "chat_template"];

    /// <summary><c>field_messages</c>: the JSON key holding a chat's messages (default <c>messages</c>).</summary>
    public string? FieldMessages { get; init; }

    /// <summary><c>message_property_mappings</c>: our message key → the file's key (e.g. role: from, content: value).</summary>
    public IReadOnlyDictionary<string, string>? MessagePropertyMappings { get; init; }

    /// <summary><c>roles_to_train</c> (default [assistant]).</summary>
    public IReadOnlyList<string>? RolesToTrain { get; init; }

    /// <summary><c>train_on_eos</c>: turn (default), all, last or none.</summary>
    public string? TrainOnEos { get; init; }

    /// <summary><c>roles</c>: template role → the file's role names (e.g. user: [human, user]).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>>? Roles { get; init; }

    /// <summary><c>field</c>: the text key of a completion dataset (default <c>text</c>).</summary>
    public string? Field { get; init; }

    /// <summary><c>chat_template</c> for this dataset only (else the top-level key).</summary>
    public string? ChatTemplate { get; init; }
}

/// <summary>
/// A training run's settings, read from YAML. Keys follow Axolotl where the concept is the same
/// (<c>datasets</c>, <c>sequence_len</c>, <c>micro_batch_size</c>, <c>gradient_accumulation_steps</c>, <c>learning_rate</c>,
/// <c>lr_scheduler</c>, <c>warmup_steps</c>, <c>output_dir</c>, ...); defaults are the DeepSeek-V3 recipe
/// (training.md). docs/config.md documents every key.
/// </summary>
public sealed class TrainConfig
{
    // Model
    [Key("base_model")] public string? BaseModel { get; set; }
    [Key("model_config")] public string? ModelConfig { get; set; }
    [Key("model_preset")] public string? ModelPreset { get; set; }
    // Unset: the base model's tokenizer.json with base_model, else byte. An explicit "byte" is honoured even with a base.
    [Key("tokenizer")] public string? Tokenizer { get; set; }
    [Key("tokenizer_vocab_size")] public int TokenizerVocabSize { get; set; } = 0;

    // Data
    public List<DatasetSpec> Datasets { get; set; } = [];

    /// <summary><c>distillation</c>: the student learns from a teacher (docs/distillation.md); null: plain training.</summary>
    public Distillation.DistillationConfig? Distillation { get; set; }
    [Key("val_set_size")] public double ValSetSize { get; set; } = 0.05;
    [Key("sequence_len")] public int SequenceLen { get; set; } = 256;
    [Key("micro_batch_size")] public int MicroBatchSize { get; set; } = 8;
    [Key("gradient_accumulation_steps")] public int GradientAccumulationSteps { get; set; } = 1;
    /// <summary>DeepSpeed's ZeRO stage for a data-parallel run: 0 keeps AdamW's moments on every rank, 1 shards them over
    /// the ranks (each updates its shard, then the parameters are allgathered). Same bits either way.</summary>
    [Key("zero_stage")] public int ZeroStage { get; set; }
    /// <summary>Expert parallelism (docs/parallelism.md §7): each group of this many consecutive ranks splits every MoE
    /// layer's routed experts into contiguous blocks and exchanges the routed token rows by all-to-all. 1: every rank
    /// holds every expert. Must divide the routed experts and the rank count.</summary>
    [Key("expert_parallel_size")] public int ExpertParallelSize { get; set; } = 1;
    /// <summary>What the expert-parallel dispatch (token rows to the experts, and output gradients back to them) sends:
    /// fp32 (exact: the same bits as one process), bf16, or fp8 (E4M3 with one fp32 scale per 1×128 block).</summary>
    [Key("ep_dispatch")] public string EpDispatch { get; set; } = "fp32";
    /// <summary>What the expert-parallel combine (expert outputs back, and input gradients back) sends: fp32 or bf16.</summary>
    [Key("ep_combine")] public string EpCombine { get; set; } = "fp32";
    [Key("seed")] public int Seed { get; set; } = 42;

    // Fine-tuning data (docs/fine-tuning.md)
    [Key("chat_template")] public string ChatTemplate { get; set; } = "tokenizer_default";
    [Key("chat_template_jinja")] public string? ChatTemplateJinja { get; set; }
    [Key("train_on_inputs")] public bool TrainOnInputs { get; set; }
    [Key("excess_length_strategy")] public string ExcessLengthStrategy { get; set; } = "drop";
    [Key("sample_packing")] public bool SamplePacking { get; set; }

    /// <summary><c>test_datasets</c>: a separate evaluation set (fine-tuning); without it <c>val_set_size</c> holds out that
    /// fraction of the examples.</summary>
    public List<DatasetSpec> TestDatasets { get; set; } = [];

    /// <summary><c>unfrozen_parameters</c> (Axolotl): regexes over HF names; when given, every parameter no regex matches
    /// is frozen.</summary>
    public List<string> UnfrozenParameters { get; set; } = [];

    /// <summary><c>frozen_parameters</c>: regexes over HF names of parameters to freeze (the inverse).</summary>
    public List<string> FrozenParameters { get; set; } = [];

    // LoRA (Axolotl's keys; docs/fine-tuning.md, LoRA)
    /// <summary><c>adapter</c>: <c>lora</c> trains low-rank adapters on a frozen base; <c>esft</c> saves an ESFT run's
    /// checkpoints as adapters (its trained experts) on a frozen base; unset trains and saves the model itself.</summary>
    [Key("adapter")] public string? Adapter { get; set; }
    [Key("lora_r")] public int LoraR { get; set; } = 8;
    [Key("lora_alpha")] public float LoraAlpha { get; set; } = 16;
    [Key("lora_dropout")] public float LoraDropout { get; set; }
    [Key("lora_target_linear")] public bool LoraTargetLinear { get; set; }
    [Key("peft_use_rslora")] public bool PeftUseRslora { get; set; }

    /// <summary><c>lora_target_modules</c>: module names or regexes over HF module paths, matched on whole segments.</summary>
    public List<string> LoraTargetModules { get; set; } = [];

    /// <summary><c>lora_modules_to_save</c>: modules trained in full next to the adapters (and saved in the adapter file).</summary>
    public List<string> LoraModulesToSave { get; set; } = [];

    /// <summary>The LoRA settings when <c>adapter: lora</c>, else null.</summary>
    public FineTuning.Lora.LoraSettings? Lora => Adapter == "lora"
        ? new(LoraR, LoraAlpha, LoraTargetModules, LoraTargetLinear, PeftUseRslora, LoraModulesToSave, LoraDropout) : null;

    // ESFT (docs/fine-tuning.md, ESFT)
    /// <summary><c>esft</c>: an ESFT expert config (the ESFT release's format, e.g. from <c>dss esft select</c>): only its
    /// routed experts train (and the shared experts / non-expert modules when it says so); everything else is frozen.</summary>
    [Key("esft")] public string? Esft { get; set; }
    /// <summary><c>esft_method</c>: token or gate: score the experts on <c>esft_samples</c> sequences of the training data
    /// first and select with <c>esft_p</c> (instead of <c>esft</c>).</summary>
    [Key("esft_method")] public string? EsftMethod { get; set; }
    /// <summary><c>esft_p</c>: the cumulative-score threshold; 0 = the paper's (0.2 for token, 0.1 for gate).</summary>
    [Key("esft_p")] public double EsftP { get; set; }
    /// <summary><c>esft_samples</c>: sequences scored with <c>esft_method</c> (ESFT used 32 of 4096 tokens).</summary>
    [Key("esft_samples")] public int EsftSamples { get; set; } = 32;

    // Optimiser and schedule
    [Key("max_steps")] public int MaxSteps { get; set; } = 1000;
    [Key("learning_rate")] public float LearningRate { get; set; } = 2.2e-4f;
    [Key("lr_scheduler")] public string LrScheduler { get; set; } = "deepseek";
    [Key("warmup_steps")] public int WarmupSteps { get; set; } = 100;
    [Key("min_lr_ratio")] public float MinLrRatio { get; set; } = 0.1f;
    [Key("weight_decay")] public float WeightDecay { get; set; } = 0.1f;
    [Key("adam_beta1")] public float AdamBeta1 { get; set; } = 0.9f;
    [Key("adam_beta2")] public float AdamBeta2 { get; set; } = 0.95f;
    [Key("adam_epsilon")] public float AdamEpsilon { get; set; } = 1e-8f;
    [Key("adam_moments")] public string AdamMoments { get; set; } = "auto";
    [Key("max_grad_norm")] public float MaxGradNorm { get; set; } = 1.0f;
    [Key("init_std")] public float InitStd { get; set; } = 0f;
    [Key("init_ulp_nudge")] public int InitUlpNudge { get; set; }

    // DeepSeek-V3 specifics
    [Key("mtp_depth")] public int MtpDepth { get; set; } = -1;
    [Key("mtp_lambda")] public float MtpLambda { get; set; } = 0.3f;
    [Key("mtp_lambda_late")] public float MtpLambdaLate { get; set; } = 0.1f;
    [Key("mtp_lambda_switch")] public float MtpLambdaSwitch { get; set; } = 0.67f;
    [Key("balancing")] public string Balancing { get; set; } = "bias";
    [Key("bias_update_speed")] public float BiasUpdateSpeed { get; set; } = 0.001f;
    [Key("seq_aux_alpha")] public float SeqAuxAlpha { get; set; } = 0.0001f;
    [Key("aux_loss_alpha")] public float AuxLossAlpha { get; set; } = 0.01f;
    [Key("precision")] public string Precision { get; set; } = "fp32";
    /// <summary>How an adapter run keeps its frozen base Linears in memory: auto (as stored: FP8 blocks from an FP8
    /// checkpoint, BF16 from a BF16 one, else fp32), fp32, bf16 or fp8 (converted on load). Trained Linears stay fp32.</summary>
    [Key("base_model_precision")] public string BaseModelPrecision { get; set; } = "auto";
    [Key("fp8_swiglu_cache")] public bool Fp8SwigluCache { get; set; } = true;
    [Key("fp8_e5m6_o_proj")] public bool Fp8E5M6OProj { get; set; } = true;
    [Key("fp8_bf16_combine")] public bool Fp8Bf16Combine { get; set; } = true;
    [Key("recompute_norms")] public bool RecomputeNorms { get; set; }
    [Key("recompute_mla_up")] public bool RecomputeMlaUp { get; set; }

    // Run
    [Key("output_dir")] public string OutputDir { get; set; } = "runs/train";
    [Key("logging_steps")] public int LoggingSteps { get; set; } = 10;
    [Key("eval_steps")] public int EvalSteps { get; set; } = 100;
    [Key("eval_batches")] public int EvalBatches { get; set; } = 8;
    /// <summary>Fine-tuning: how many problems of the <c>test_datasets</c> entry of type gsm8k to answer greedily at every
    /// evaluation (exact-match accuracy, as <c>dss eval --metric gsm8k</c>); 0 = none.</summary>
    [Key("eval_gsm8k_problems")] public int EvalGsm8kProblems { get; set; }
    [Key("save_steps")] public int SaveSteps { get; set; } = 500;
    [Key("save_total_limit")] public int SaveTotalLimit { get; set; } = 2;
    [Key("sample_tokens")] public int SampleTokens { get; set; } = 64;
    [Key("sample_prompt")] public string SamplePrompt { get; set; } = "\n";
    [Key("threads")] public int Threads { get; set; } = 0;

    [AttributeUsage(AttributeTargets.Property)]
    private sealed class KeyAttribute(string name) : Attribute { public string Name { get; } = name; }

    // Where each key's value came from (the YAML file or --set), so a bad value is reported against its source.
    private readonly Dictionary<string, string> _sources = new(StringComparer.Ordinal);

    private static readonly Dictionary<string, PropertyInfo> ScalarKeys = typeof(TrainConfig).GetProperties()
        .Where(p => p.GetCustomAttribute<KeyAttribute>() is not null)
        .ToDictionary(p => p.GetCustomAttribute<KeyAttribute>()!.Name);

    /// <summary>The keys whose value is a list.</summary>
    private static readonly string[] ListKeys = ["datasets", "test_datasets", "unfrozen_parameters", "frozen_parameters", "lora_target_modules", "lora_modules_to_save"];

    public static IEnumerable<string> Keys => ScalarKeys.Keys.Concat(ListKeys).Append("distillation");

    /// <summary>The file in <c>output_dir</c> recording the settings a run resolved (what <c>dss report</c> shows).</summary>
    public const string RunFileName = "train_config.json";

    /// <summary>
    /// Every setting as one JSON object keyed like the YAML (<c>datasets</c> as <c>{path, type}</c> entries, a
    /// non-finite number as its name in a string). JSON is YAML, so <see cref="Load"/> reads it back unchanged.
    /// </summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer, new System.Text.Json.JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            foreach (var (key, property) in ScalarKeys)
            {
                switch (property.GetValue(this))
                {
                    case null: w.WriteNull(key); break;
                    case string s: w.WriteString(key, s); break;
                    case bool b: w.WriteBoolean(key, b); break;
                    case int i: w.WriteNumber(key, i); break;
                    case float f when float.IsFinite(f): w.WriteNumber(key, f); break;
                    case double d when double.IsFinite(d): w.WriteNumber(key, d); break;
                    case var other: w.WriteString(key, Convert.ToString(other, CultureInfo.InvariantCulture)); break;
                }
            }
            foreach (var (listKey, names) in new[] { ("unfrozen_parameters", UnfrozenParameters), ("frozen_parameters", FrozenParameters),
                ("lora_target_modules", LoraTargetModules), ("lora_modules_to_save", LoraModulesToSave) })
            {
                w.WriteStartArray(listKey);
                foreach (var n in names) w.WriteStringValue(n);
                w.WriteEndArray();
            }
            foreach (var (listKey, list) in new[] { ("datasets", Datasets), ("test_datasets", TestDatasets) })
            {
            w.WriteStartArray(listKey);
            foreach (var d in list)
            {
                w.WriteStartObject();
                w.WriteString("path", d.Path);
                if (d.Type is not null) w.WriteString("type", d.Type);
                if (d.FieldMessages is not null) w.WriteString("field_messages", d.FieldMessages);
                if (d.MessagePropertyMappings is not null)
                {
                    w.WriteStartObject("message_property_mappings");
                    foreach (var (k, v) in d.MessagePropertyMappings) w.WriteString(k, v);
                    w.WriteEndObject();
                }
                if (d.RolesToTrain is not null)
                {
                    w.WriteStartArray("roles_to_train");
                    foreach (var r in d.RolesToTrain) w.WriteStringValue(r);
                    w.WriteEndArray();
                }
                if (d.TrainOnEos is not null) w.WriteString("train_on_eos", d.TrainOnEos);
                if (d.Roles is not null)
                {
                    w.WriteStartObject("roles");
                    foreach (var (k, names) in d.Roles)
                    {
                        w.WriteStartArray(k);
                        foreach (var n in names) w.WriteStringValue(n);
                        w.WriteEndArray();
                    }
                    w.WriteEndObject();
                }
                if (d.Field is not null) w.WriteString("field", d.Field);
                if (d.ChatTemplate is not null) w.WriteString("chat_template", d.ChatTemplate);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            }
            if (Distillation is not null) Distillation.WriteJson(w);
            else w.WriteNull("distillation");
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Reads YAML, then applies <c>key=value</c> overrides (<c>--set</c>) in order.</summary>
    public static TrainConfig Load(string? path, IEnumerable<string> overrides)
    {
        var cfg = new TrainConfig();
        if (path is not null)
        {
            string text = IO.InputFile.ReadAllText(path, "config file");
            var yaml = new YamlStream();
            try { yaml.Load(new StringReader(text)); }
            catch (YamlDotNet.Core.YamlException e) { throw new DeepSeekSharpException($"{path}: invalid YAML at line {e.Start.Line}: {e.Message}"); }
            if (yaml.Documents.Count > 0 && yaml.Documents[0].RootNode is YamlMappingNode root)
                foreach (var (k, v) in root.Children) cfg.Apply(((YamlScalarNode)k).Value ?? "", v, path);
            else if (yaml.Documents.Count > 0) throw new DeepSeekSharpException($"{path}: expected a mapping of keys at the top level");
        }
        foreach (var o in overrides)
        {
            int eq = o.IndexOf('=');
            if (eq <= 0) throw new DeepSeekSharpException($"--set '{o}': expected key=value");
            string key = o[..eq].Trim(), value = o[(eq + 1)..];
            if (key is "datasets" or "test_datasets")
            {
                var specs = value.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(p => new DatasetSpec(p.Trim())).ToList();
                if (key == "datasets") cfg.Datasets = specs;
                else cfg.TestDatasets = specs;
                cfg._sources[key] = "--set";
            }
            else if (ListKeys.Contains(key))
            {
                // A YAML flow list ([a, b]) or one value.
                var yaml = new YamlStream();
                try { yaml.Load(new StringReader(value)); }
                catch (YamlDotNet.Core.YamlException e) { throw new DeepSeekSharpException($"--set '{o}': {e.Message}"); }
                cfg.Apply(key, yaml.Documents.Count > 0 ? yaml.Documents[0].RootNode : new YamlSequenceNode(), "--set");
            }
            else cfg.SetScalar(key, value, "--set");
        }
        cfg.Validate(path ?? "--set");
        return cfg;
    }

    private void Apply(string key, YamlNode value, string source)
    {
        if (key == "distillation")
        {
            Distillation = DeepSeekSharp.Distillation.DistillationConfig.Parse(value, source);
            _sources[key] = source;
            return;
        }
        if (key is "datasets" or "test_datasets")
        {
            if (value is not YamlSequenceNode seq) throw new DeepSeekSharpException($"{source}: '{key}' must be a list");
            var specs = seq.Children.Select(item => item switch
            {
                YamlScalarNode s => new DatasetSpec(s.Value ?? ""),
                YamlMappingNode m => DatasetEntry(m, source),
                _ => throw new DeepSeekSharpException($"{source}: bad {key} entry"),
            }).ToList();
            if (key == "datasets") Datasets = specs;
            else TestDatasets = specs;
            _sources[key] = source;
            return;
        }
        if (key is "unfrozen_parameters" or "frozen_parameters" or "lora_target_modules" or "lora_modules_to_save")
        {
            var patterns = value switch
            {
                YamlSequenceNode seq => seq.Children.Select(c => (c as YamlScalarNode)?.Value
                    ?? throw new DeepSeekSharpException($"{source}: '{key}' must be a list of regexes")).ToList(),
                YamlScalarNode { Value: { Length: > 0 } one } => [one],
                YamlScalarNode => [],
                _ => throw new DeepSeekSharpException($"{source}: '{key}' must be a list of regexes"),
            };
            foreach (var pattern in patterns)
            {
                try { _ = new System.Text.RegularExpressions.Regex(pattern); }
                catch (ArgumentException e) { throw new DeepSeekSharpException($"{source}: {key}: '{pattern}' is not a valid regex ({e.Message})"); }
            }
            if (key == "unfrozen_parameters") UnfrozenParameters = patterns;
            else if (key == "frozen_parameters") FrozenParameters = patterns;
            else if (key == "lora_target_modules") LoraTargetModules = patterns;
            else LoraModulesToSave = patterns;
            _sources[key] = source;
            return;
        }
        if (value is not YamlScalarNode scalar) throw new DeepSeekSharpException($"{source}: '{key}' must be a single value");
        SetScalar(key, scalar.Value ?? "", source);
    }

    private static DatasetSpec DatasetEntry(YamlMappingNode m, string source)
    {
        foreach (var k in m.Children.Keys)
            if (k is not YamlScalarNode { Value: { } name } || !DatasetSpec.Keys.Contains(name))
                throw new DeepSeekSharpException($"{source}: unknown dataset key '{k}' (known: {string.Join(", ", DatasetSpec.Keys)})");
        string path = Scalar(m, "path") ?? throw new DeepSeekSharpException($"{source}: a dataset entry needs 'path'");
        YamlNode? Node(string key) => m.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;
        IReadOnlyList<string>? List(string key) => Node(key) switch
        {
            null => null,
            YamlSequenceNode seq => seq.Children.Select(c => (c as YamlScalarNode)?.Value ?? throw new DeepSeekSharpException($"{source}: dataset {path}: '{key}' must be a list of names")).ToList(),
            YamlScalarNode one when one.Value is { Length: > 0 } v => [v],
            _ => throw new DeepSeekSharpException($"{source}: dataset {path}: '{key}' must be a list of names"),
        };
        Dictionary<string, YamlNode>? Map(string key) => Node(key) switch
        {
            null => null,
            YamlMappingNode map => map.Children.ToDictionary(kv => (kv.Key as YamlScalarNode)?.Value ?? "", kv => kv.Value, StringComparer.Ordinal),
            _ => throw new DeepSeekSharpException($"{source}: dataset {path}: '{key}' must be a mapping"),
        };
        foreach (var scalarKey in new[] { "type", "field_messages", "train_on_eos", "field", "chat_template" })
            if (Node(scalarKey) is { } n && n is not YamlScalarNode) throw new DeepSeekSharpException($"{source}: dataset {path}: '{scalarKey}' must be a single value");
        return new DatasetSpec(path, Scalar(m, "type"))
        {
            FieldMessages = Scalar(m, "field_messages"),
            MessagePropertyMappings = Map("message_property_mappings")?.ToDictionary(kv => kv.Key,
                kv => (kv.Value as YamlScalarNode)?.Value ?? throw new DeepSeekSharpException($"{source}: dataset {path}: message_property_mappings.{kv.Key} must be a key name"), StringComparer.Ordinal),
            RolesToTrain = List("roles_to_train"),
            TrainOnEos = Scalar(m, "train_on_eos"),
            Roles = Map("roles")?.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<string>)(kv.Value switch
            {
                YamlSequenceNode seq => seq.Children.Select(c => (c as YamlScalarNode)?.Value ?? "").ToList(),
                YamlScalarNode one => [one.Value ?? ""],
                _ => throw new DeepSeekSharpException($"{source}: dataset {path}: roles.{kv.Key} must be a list of names"),
            }), StringComparer.Ordinal),
            Field = Scalar(m, "field"),
            ChatTemplate = Scalar(m, "chat_template"),
        };
    }

    private static string? Scalar(YamlMappingNode m, string key) =>
        m.Children.TryGetValue(new YamlScalarNode(key), out var v) && v is YamlScalarNode s ? s.Value : null;

    private void SetScalar(string key, string raw, string source)
    {
        if (!ScalarKeys.TryGetValue(key, out var prop))
            throw new DeepSeekSharpException($"{source}: unknown key '{key}' (known: {string.Join(", ", Keys.Order())})");
        object? value;
        try
        {
            value = prop.PropertyType == typeof(string) ? raw
                : prop.PropertyType == typeof(string) || Nullable.GetUnderlyingType(prop.PropertyType) == typeof(string) ? raw
                : prop.PropertyType == typeof(int) ? int.Parse(raw, CultureInfo.InvariantCulture)
                : prop.PropertyType == typeof(float) ? float.Parse(raw, CultureInfo.InvariantCulture)
                : prop.PropertyType == typeof(double) ? double.Parse(raw, CultureInfo.InvariantCulture)
                : prop.PropertyType == typeof(bool) ? bool.Parse(raw)
                : raw;
        }
        catch (FormatException) { throw new DeepSeekSharpException($"{source}: '{key}' = '{raw}' is not a valid {prop.PropertyType.Name}"); }
        catch (OverflowException) { throw new DeepSeekSharpException($"{source}: '{key}' = '{raw}' is out of range"); }
        if (raw is "null" or "~" && prop.PropertyType == typeof(string) && Nullable.GetUnderlyingType(prop.PropertyType) is null && prop.Name is "BaseModel" or "ModelConfig" or "Tokenizer" or "ModelPreset" or "ChatTemplateJinja" or "Adapter" or "Esft" or "EsftMethod")
            value = null;
        prop.SetValue(this, value);
        _sources[key] = source;
    }

    /// <summary>
    /// The one check of a training config, after the file and every override: each numeric key in its range and
    /// finite, the string keys among their choices. A bad value is reported against the file or the --set that gave it.
    /// </summary>
    private void Validate(string defaultSource)
    {
        void Require(bool ok, string key, string what)
        {
            if (!ok) throw new DeepSeekSharpException($"{_sources.GetValueOrDefault(key, defaultSource)}: {key} {what}");
        }
        void AtLeast(string key, long value, long min) => Require(value >= min, key, $"must be ≥ {min} (got {value})");
        void Finite(string key, double value, double min, double max, bool maxExclusive = false) =>
            Require(double.IsFinite(value) && value >= min && (maxExclusive ? value < max : value <= max), key,
                $"must be a finite number in [{min}, {max}{(maxExclusive ? ")" : "]")} (got {value})");
        void FinitePositive(string key, double value) => Require(double.IsFinite(value) && value > 0, key, $"must be a finite number > 0 (got {value})");

        AtLeast("tokenizer_vocab_size", TokenizerVocabSize, 0);
        Finite("val_set_size", ValSetSize, 0, 0.5, maxExclusive: true);
        AtLeast("sequence_len", SequenceLen, 2);
        AtLeast("micro_batch_size", MicroBatchSize, 1);
        Require((long)MicroBatchSize * SequenceLen <= Array.MaxLength, "sequence_len", $"× micro_batch_size = {(long)MicroBatchSize * SequenceLen} tokens exceeds one batch array ({Array.MaxLength})");
        AtLeast("gradient_accumulation_steps", GradientAccumulationSteps, 1);
        Require(ZeroStage is 0 or 1, "zero_stage", $"must be 0 or 1 (got {ZeroStage}; stages 2 and 3 are not implemented)");
        AtLeast("expert_parallel_size", ExpertParallelSize, 1);
        Require(EpDispatch is "fp32" or "bf16" or "fp8", "ep_dispatch", $"must be fp32, bf16 or fp8 (got '{EpDispatch}')");
        Require(EpCombine is "fp32" or "bf16", "ep_combine", $"must be fp32 or bf16 (got '{EpCombine}')");
        AtLeast("max_steps", MaxSteps, 1);
        FinitePositive("learning_rate", LearningRate);
        AtLeast("warmup_steps", WarmupSteps, 0);
        Finite("min_lr_ratio", MinLrRatio, 0, 1);
        Finite("weight_decay", WeightDecay, 0, double.MaxValue);
        Finite("adam_beta1", AdamBeta1, 0, 1, maxExclusive: true);
        Finite("adam_beta2", AdamBeta2, 0, 1, maxExclusive: true);
        FinitePositive("adam_epsilon", AdamEpsilon);
        Finite("max_grad_norm", MaxGradNorm, 0, double.MaxValue);
        Finite("init_std", InitStd, 0, double.MaxValue);
        AtLeast("init_ulp_nudge", InitUlpNudge, 0);
        AtLeast("mtp_depth", MtpDepth, -1);
        Finite("mtp_lambda", MtpLambda, 0, double.MaxValue);
        Finite("mtp_lambda_late", MtpLambdaLate, 0, double.MaxValue);
        Finite("mtp_lambda_switch", MtpLambdaSwitch, 0, 1);
        Finite("bias_update_speed", BiasUpdateSpeed, 0, double.MaxValue);
        Finite("seq_aux_alpha", SeqAuxAlpha, 0, double.MaxValue);
        Finite("aux_loss_alpha", AuxLossAlpha, 0, double.MaxValue);
        AtLeast("logging_steps", LoggingSteps, 1);
        AtLeast("eval_steps", EvalSteps, 1);
        AtLeast("eval_batches", EvalBatches, 0);
        AtLeast("eval_gsm8k_problems", EvalGsm8kProblems, 0);
        AtLeast("save_steps", SaveSteps, 1);
        AtLeast("save_total_limit", SaveTotalLimit, 0);
        AtLeast("sample_tokens", SampleTokens, 0);
        Require(Threads is >= 0 and <= Kernels.Cpu.WorkerPool.MaxThreads, "threads", $"must be in [0, {Kernels.Cpu.WorkerPool.MaxThreads}] (0 = one per core; got {Threads})");
        Require(LrSchedule.Kinds.Contains(LrScheduler), "lr_scheduler", $"must be one of {string.Join(", ", LrSchedule.Kinds)}");
        Require(Balancing is "bias" or "aux_loss" or "none", "balancing", "must be bias, aux_loss or none");
        Require(ExcessLengthStrategy is "drop" or "truncate" or "raise", "excess_length_strategy", "must be drop, truncate or raise");
        Require(Fp8.Fp8Training.Precisions.Contains(Precision), "precision", "must be fp32, bf16 (BF16 weights in every Linear, fp32 master copy) or fp8 (FP8 GEMMs in every attention/MLP Linear)");
        Require(BaseModelPrecision is "auto" or "fp32" or "bf16" or "fp8", "base_model_precision", $"must be auto, fp32, bf16 or fp8 (got '{BaseModelPrecision}')");
        Require(BaseModelPrecision is "auto" or "fp32" || Adapter is not null,
            "base_model_precision", "applies to the frozen base of an adapter run (adapter: lora); full fine-tuning checkpoints hold every weight in fp32");
        Require(AdamMoments is "auto" or "fp32" or "bf16", "adam_moments", "must be auto (bf16 with precision fp8, else fp32), fp32 or bf16");
        Require(UnfrozenParameters.Count == 0 || FrozenParameters.Count == 0, "frozen_parameters", "conflicts with unfrozen_parameters: give one of them");
        Require(Adapter is null or "lora" or "esft", "adapter", $"must be lora, esft or unset (got '{Adapter}')");
        Require(Esft is null || EsftMethod is null, "esft_method", "conflicts with esft: give an expert config or a method to select one, not both");
        Require(EsftMethod is null or "token" or "gate", "esft_method", $"must be token or gate (got '{EsftMethod}')");
        Finite("esft_p", EsftP, 0, 1);
        AtLeast("esft_samples", EsftSamples, 1);
        bool esft = Esft is not null || EsftMethod is not null;
        Require(!esft || Adapter is null or "esft", "adapter", "lora conflicts with esft: an ESFT run trains experts, not LoRA adapters");
        Require(!esft || (UnfrozenParameters.Count == 0 && FrozenParameters.Count == 0), esft && Esft is not null ? "esft" : "esft_method",
            "decides what is frozen; give it without unfrozen_parameters/frozen_parameters");
        Require(Adapter != "esft" || esft, "adapter", "esft needs esft (an expert config) or esft_method");
        Require(Adapter != "esft" || BaseModel is not null, "base_model", "adapter: esft needs base_model (the adapter's experts replace the base's)");
        if (Adapter == "lora")
        {
            Require(LoraR >= 1, "lora_r", $"must be a positive integer (got {LoraR})");
            Require(float.IsFinite(LoraAlpha) && LoraAlpha > 0, "lora_alpha", "must be a positive number");
            Require(LoraDropout >= 0 && LoraDropout < 1, "lora_dropout", $"must lie in [0, 1) (got {LoraDropout})");
            Require(LoraTargetLinear || LoraTargetModules.Count > 0, "lora_target_modules", "adapter: lora needs lora_target_modules or lora_target_linear: true");
            Require(UnfrozenParameters.Count == 0 && FrozenParameters.Count == 0, "adapter", "lora freezes the whole base; use lora_modules_to_save instead of unfrozen_parameters/frozen_parameters");
            Require(BaseModel is not null, "base_model", "adapter: lora needs base_model (the adapters train on a frozen base)");
        }
        Require((BaseModel is null ? 0 : 1) + (ModelConfig is null ? 0 : 1) + (ModelPreset is null ? 0 : 1) <= 1,
            BaseModel is not null ? "base_model" : "model_config", "conflicts: give at most one of base_model, model_config, model_preset");
    }

    /// <summary>The AdamW moment storage: <c>adam_moments</c>, or with <c>auto</c> what the precision implies.</summary>
    public Optim.MomentPrecision MomentPrecision => AdamMoments switch
    {
        "bf16" => Optim.MomentPrecision.Bf16,
        "fp32" => Optim.MomentPrecision.Fp32,
        _ => Fp8.Fp8Training.DefaultMoments(Precision),
    };
}
