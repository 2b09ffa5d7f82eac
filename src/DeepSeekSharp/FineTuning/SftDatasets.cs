using System.Text.Json;
using DeepSeekSharp.Data;
using DeepSeekSharp.FineTuning.Templates;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.FineTuning;

/// <summary>One example and the line it came from.</summary>
/// <param name="Source">file:line</param>
/// <param name="Truncated">cut to sequence_len (excess_length_strategy: truncate)</param>
public sealed record SftExample(TokenizedExample Example, string Source, bool Truncated);

/// <summary>What loading one dataset did: examples read and kept, their tokens, and what was dropped or cut and why.</summary>
public sealed record SftDatasetStats(string Path, string Type, int Read, int Kept, long Tokens, long TrainedTokens, int DroppedTooLong, int Truncated, int DroppedUntrained);

/// <summary>Every kept example of every dataset, in dataset order, with per-dataset counts.</summary>
public sealed record SftData(IReadOnlyList<SftExample> Examples, IReadOnlyList<SftDatasetStats> Datasets);

/// <summary>
/// Reads the <c>datasets:</c> of a config as supervised fine-tuning data, with Axolotl's dataset types and defaults:
/// <list type="bullet">
/// <item><c>chat_template</c>: JSON lines with a list of messages (<c>field_messages</c>, default <c>messages</c>) whose keys
/// <c>message_property_mappings</c> maps (default role → role, content → content; ShareGPT: role: from, content: value)
/// and whose role names <c>roles</c> maps (default user: [human, user], assistant: [gpt, assistant], system: [system],
/// tool: [tool]); rendered with the chat template; <c>roles_to_train</c> (default [assistant]) and <c>train_on_eos</c>
/// (default turn) say what carries loss.</item>
/// <item><c>gsm8k</c>: <c>question</c>/<c>answer</c> as a user turn and an assistant turn of the same chat template.</item>
/// <item><c>alpaca</c>: <c>instruction</c>, optional <c>input</c>, <c>output</c> in the Alpaca prompt; the output and EOS train.</item>
/// <item><c>completion</c>: <c>text</c> (or <c>field</c>), all of it and EOS trained.</item>
/// <item><c>input_output</c>: <c>segments: [{text, label}]</c>, each segment encoded on its own and trained where label is
/// true; no BOS or EOS is added (write them in the segments).</item>
/// </list>
/// <c>train_on_inputs: true</c> trains every token. Examples longer than <c>sequence_len</c> are dropped, truncated or an
/// error (<c>excess_length_strategy</c>); examples left without a trained token are dropped; a dataset left empty is an
/// error. Every error is one line naming the file (and line).
/// </summary>
public static class SftDatasets
{
    public static readonly string[] Types = ["chat_template", "alpaca", "completion", "input_output", "gsm8k"];

    /// <summary>Whether the config's datasets are fine-tuning data (every one of a fine-tuning type) rather than
    /// pre-training text; a mix is an error.</summary>
    public static bool IsFineTuning(TrainConfig cfg)
    {
        int sft = cfg.Datasets.Count(d => d.Type is not null && Types.Contains(d.Type));
        if (sft > 0 && sft < cfg.Datasets.Count)
            throw new DeepSeekSharpException($"datasets: {string.Join(", ", cfg.Datasets.Where(d => d.Type is null || !Types.Contains(d.Type)).Select(d => d.Path))} "
                + $"are pre-training text while the others are fine-tuning data ({string.Join(", ", Types)}); a run trains on one kind");
        if (sft == 0 && cfg.TestDatasets.Count > 0)
            throw new DeepSeekSharpException("test_datasets: only fine-tuning runs take a separate evaluation set (pre-training holds out val_set_size of the token stream)");
        return sft > 0;
    }

    private static readonly Dictionary<string, string[]> DefaultRoles = new(StringComparer.Ordinal)
    {
        ["user"] = ["human", "user"],
        ["assistant"] = ["gpt", "assistant"],
        ["system"] = ["system"],
        ["tool"] = ["tool"],
    };

    private const string AlpacaWithInput = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{0}\n\n### Input:\n{1}\n\n### Response:\n";
    private const string AlpacaNoInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{0}\n\n### Response:\n";

    /// <param name="progress">told "N examples" now and then on long datasets</param>
    /// <param name="datasets">the entries to read (default: <c>datasets:</c>; the trainer passes <c>test_datasets:</c> too)</param>
    public static SftData Load(TrainConfig cfg, SftTokenizer tokenizer, Action<string>? progress = null, CancellationToken ct = default,
        IReadOnlyList<DatasetSpec>? datasets = null)
    {
        datasets ??= cfg.Datasets;
        if (datasets.Count == 0) throw new DeepSeekSharpException("datasets: no dataset configured");
        var examples = new List<SftExample>();
        var stats = new List<SftDatasetStats>();
        var templates = new Dictionary<string, ChatTemplate>(StringComparer.Ordinal);
        foreach (var spec in datasets)
        {
            string type = spec.Type ?? throw new DeepSeekSharpException($"{spec.Path}: give the dataset's type ({string.Join(", ", Types)})");
            if (!Types.Contains(type)) throw new DeepSeekSharpException($"{spec.Path}: unknown dataset type '{type}' (fine-tuning types: {string.Join(", ", Types)})");
            if (!File.Exists(spec.Path)) throw new DeepSeekSharpException($"{spec.Path}: dataset file not found");
            string trainOnEos = spec.TrainOnEos ?? "turn";
            if (!ChatMasking.TrainOnEosValues.Contains(trainOnEos))
                throw new DeepSeekSharpException($"{spec.Path}: train_on_eos '{trainOnEos}' must be one of {string.Join(", ", ChatMasking.TrainOnEosValues)}");
            ChatTemplate? template = null;
            if (type is "chat_template" or "gsm8k")
            {
                string name = spec.ChatTemplate ?? cfg.ChatTemplate;
                if (!templates.TryGetValue(name, out template)) templates[name] = template = ChatTemplate.Resolve(name, cfg.ChatTemplateJinja, tokenizer);
            }
            var roleOf = RoleMap(spec);
            var rolesToTrain = spec.RolesToTrain ?? ["assistant"];
            if (type is "chat_template" or "gsm8k")
                foreach (var role in rolesToTrain)
                    if (!roleOf.ContainsValue(role))
                        throw new DeepSeekSharpException($"{spec.Path}: roles_to_train names '{role}', which is not a template role (roles: {string.Join(", ", roleOf.Values.Distinct())})");
            int read = 0, kept = 0, tooLong = 0, truncated = 0, untrained = 0;
            long tokens = 0, trained = 0;
            var items = Utf8Text.JsonLines(spec.Path, (root, line) => (Example: Convert(type, spec, root, line, tokenizer, template, roleOf, rolesToTrain, trainOnEos, cfg.TrainOnInputs), Line: line));
            foreach (var (example, line) in items)
            {
                ct.ThrowIfCancellationRequested();
                read++;
                if (read % 1000 == 0) progress?.Invoke($"{spec.Path}: {read} examples");
                var ex = example;
                bool cut = false;
                if (ex.InputIds.Length > cfg.SequenceLen)
                {
                    switch (cfg.ExcessLengthStrategy)
                    {
                        case "raise":
                            throw new DeepSeekSharpException($"{spec.Path}:{line}: example of {ex.InputIds.Length} tokens is longer than sequence_len {cfg.SequenceLen} (excess_length_strategy: raise; drop or truncate skip or cut it)");
                        case "truncate":
                            ex = new TokenizedExample(ex.InputIds[..cfg.SequenceLen], ex.Labels[..cfg.SequenceLen]);
                            cut = true;
                            break;
                        default:
                            tooLong++;
                            continue;
                    }
                }
                int exampleTrained = ex.TrainedTokens;
                if (exampleTrained == 0)
                {
                    untrained++;
                    continue;
                }
                if (cut) truncated++;
                kept++;
                tokens += ex.InputIds.Length;
                trained += exampleTrained;
                examples.Add(new SftExample(ex, $"{spec.Path}:{line}", cut));
            }
            if (kept == 0)
                throw new DeepSeekSharpException(read == 0 ? $"{spec.Path}: the dataset has no examples"
                    : $"{spec.Path}: no examples left after filtering ({read} read: {tooLong} longer than sequence_len {cfg.SequenceLen}, {untrained} without a trained token)");
            stats.Add(new SftDatasetStats(spec.Path, type, read, kept, tokens, trained, tooLong, truncated, untrained));
        }
        return new SftData(examples, stats);
    }

    private static TokenizedExample Convert(string type, DatasetSpec spec, JsonElement root, int line, SftTokenizer tokenizer, ChatTemplate? template,
        Dictionary<string, string> roleOf, IReadOnlyList<string> rolesToTrain, string trainOnEos, bool trainOnInputs)
    {
        string path = spec.Path;
        try
        {
            switch (type)
            {
                case "chat_template":
                    return ChatMasking.Render(template!, Messages(root, spec, roleOf, path, line), rolesToTrain, trainOnEos).Tokenize(tokenizer.Tokenizer, trainOnInputs);
                case "gsm8k":
                    var turns = new List<IDictionary<string, object?>>
                    {
                        Message("user", RequireString(root, "question", path, line)),
                        Message("assistant", RequireString(root, "answer", path, line)),
                    };
                    return ChatMasking.Render(template!, turns, rolesToTrain, trainOnEos).Tokenize(tokenizer.Tokenizer, trainOnInputs);
                case "alpaca":
                    string instruction = RequireString(root, "instruction", path, line), output = RequireString(root, "output", path, line);
                    string input = OptionalString(root, "input", path, line) ?? "";
                    string prompt = string.Format(System.Globalization.CultureInfo.InvariantCulture, input.Length > 0 ? AlpacaWithInput : AlpacaNoInput, instruction, input);
                    return new LabelledText(prompt + output, [(prompt.Length, prompt.Length + output.Length)], AddBos: tokenizer.AddBosToken, AddEos: true, TrainEos: true)
                        .Tokenize(tokenizer.Tokenizer, trainOnInputs);
                case "completion":
                    string text = RequireString(root, spec.Field ?? "text", path, line);
                    return new LabelledText(text, [(0, text.Length)], AddBos: tokenizer.AddBosToken, AddEos: true, TrainEos: true).Tokenize(tokenizer.Tokenizer, trainOnInputs);
                default:
                    return Segments(root, path, line, tokenizer, trainOnInputs);
            }
        }
        catch (DeepSeekSharpException e) when (!e.Message.StartsWith(path, StringComparison.Ordinal))
        {
            throw new DeepSeekSharpException($"{path}:{line}: {e.Message}");
        }
    }

    private static TokenizedExample Segments(JsonElement root, string path, int line, SftTokenizer tokenizer, bool trainOnInputs)
    {
        if (!root.TryGetProperty("segments", out var segments) || segments.ValueKind != JsonValueKind.Array)
            throw new DeepSeekSharpException($"{path}:{line}: missing array field 'segments'");
        var ids = new List<int>();
        var labels = new List<int>();
        int n = 0;
        foreach (var segment in segments.EnumerateArray())
        {
            n++;
            if (segment.ValueKind != JsonValueKind.Object) throw new DeepSeekSharpException($"{path}:{line}: segment {n} is not an object");
            string text = RequireString(segment, "text", path, line, $"segment {n} ");
            if (!segment.TryGetProperty("label", out var label) || label.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                throw new DeepSeekSharpException($"{path}:{line}: segment {n} has no boolean 'label'");
            int[] segmentIds = tokenizer.Tokenizer.Encode(text);
            ids.AddRange(segmentIds);
            bool train = trainOnInputs || label.ValueKind == JsonValueKind.True;
            foreach (int id in segmentIds) labels.Add(train ? id : TokenizedExample.IgnoreIndex);
        }
        return new TokenizedExample(ids.ToArray(), labels.ToArray());
    }

    private static Dictionary<string, string> RoleMap(DatasetSpec spec)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (role, names) in spec.Roles is { } roles ? roles.Select(kv => (kv.Key, (IEnumerable<string>)kv.Value)) : DefaultRoles.Select(kv => (kv.Key, (IEnumerable<string>)kv.Value)))
            foreach (var name in names) map[name] = role;
        return map;
    }

    /// <summary>A chat's messages as template dicts, every key kept, role and content read through the mappings.</summary>
    private static List<IDictionary<string, object?>> Messages(JsonElement root, DatasetSpec spec, Dictionary<string, string> roleOf, string path, int line)
    {
        string field = spec.FieldMessages ?? "messages";
        if (!root.TryGetProperty(field, out var messages) || messages.ValueKind != JsonValueKind.Array)
            throw new DeepSeekSharpException($"{path}:{line}: missing array field '{field}'");
        string roleKey = spec.MessagePropertyMappings?.GetValueOrDefault("role") ?? "role";
        string contentKey = spec.MessagePropertyMappings?.GetValueOrDefault("content") ?? "content";
        var list = new List<IDictionary<string, object?>>();
        int n = 0;
        foreach (var m in messages.EnumerateArray())
        {
            n++;
            if (m.ValueKind != JsonValueKind.Object) throw new DeepSeekSharpException($"{path}:{line}: message {n} is not an object");
            var dict = (OrderedDictionary<string, object?>)JinjaTemplate.FromJson(m)!;
            if (!m.TryGetProperty(roleKey, out var r) || r.ValueKind != JsonValueKind.String)
                throw new DeepSeekSharpException($"{path}:{line}: message {n} has no string '{roleKey}' (its role)");
            string given = Utf8Text.GetString(r, path, line, roleKey);
            if (!roleOf.TryGetValue(given, out var role))
                throw new DeepSeekSharpException($"{path}:{line}: message {n} has unknown role '{given}' (known: {string.Join(", ", roleOf.Keys)}; map others with roles:)");
            string? content = null;
            if (m.TryGetProperty(contentKey, out var c) && c.ValueKind == JsonValueKind.String) content = Utf8Text.GetString(c, path, line, contentKey);
            else if (!(role == "assistant" && m.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array && (c.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)))
                throw new DeepSeekSharpException($"{path}:{line}: message {n} ({given}) has no string '{contentKey}' (its content)");
            dict.Remove(roleKey);
            dict.Remove(contentKey);
            dict["role"] = role;
            dict["content"] = content;
            list.Add(dict);
        }
        if (list.Count == 0) throw new DeepSeekSharpException($"{path}:{line}: '{field}' is empty");
        return list;
    }

    private static OrderedDictionary<string, object?> Message(string role, string content) =>
        new(StringComparer.Ordinal) { ["role"] = role, ["content"] = content };

    private static string RequireString(JsonElement root, string key, string path, int line, string what = "") =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? Utf8Text.GetString(v, path, line, key)
            : throw new DeepSeekSharpException($"{path}:{line}: {what}missing string field '{key}'");

    private static string? OptionalString(JsonElement root, string key, string path, int line) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? Utf8Text.GetString(v, path, line, key)
            : root.TryGetProperty(key, out v) && v.ValueKind != JsonValueKind.Null ? throw new DeepSeekSharpException($"{path}:{line}: '{key}' is not a string") : null;
}
