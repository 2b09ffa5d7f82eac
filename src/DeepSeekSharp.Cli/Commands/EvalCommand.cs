using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Evaluation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss eval</c>: a model's masked loss on fine-tuning data, or its GSM8K accuracy by greedy generation.</summary>
internal static class EvalCommand
{
    private const int DefaultSequenceLenCap = 4096;

    public static Command Create()
    {
        var model = CliCommon.ModelOption();
        var data = new Option<string>("--data") { Description = "JSON-lines dataset (for gsm8k: question/answer lines, the answer ending in '#### N')", Required = true };
        var type = new Option<string?>("--type") { Description = $"dataset type for --metric loss ({string.Join(", ", SftDatasets.Types)}); gsm8k for --metric gsm8k (its default)" };
        var metric = new Option<string>("--metric") { Description = "loss: masked loss per trained token, perplexity and bits per byte; gsm8k: exact-match accuracy of greedy answers", DefaultValueFactory = _ => "loss" };
        metric.AcceptOnlyFromAmong("loss", "gsm8k");
        var limit = new Option<int?>("--limit") { Description = "evaluate the first N examples only" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.json (or its folder) when the model folder has none" };
        var chatTemplate = new Option<string>("--chat-template")
        {
            Description = "tokenizer_default (the tokenizer_config.json's), deepseek_v3 (built in) or a Jinja template file",
            DefaultValueFactory = _ => "tokenizer_default",
        };
        var sequenceLen = new Option<int?>("--sequence-len") { Description = $"loss: examples longer than this are dropped and counted (default: the model's max_position_embeddings, at most {DefaultSequenceLenCap})" };
        var threads = new Option<int>("--threads") { Description = "worker threads (sets DSS_THREADS for this run; default all cores)", DefaultValueFactory = _ => 0 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "gsm8k: tokens generated per problem at most (it stops earlier at EOS)", DefaultValueFactory = _ => 256 };
        var batchSize = new Option<int>("--batch-size") { Description = "gsm8k: problems decoded together, one forward per step for all", DefaultValueFactory = _ => 16 };
        var json = new Option<bool>("--json") { Description = "print one JSON object with the metrics (and gsm8k's right and wrong samples) on stdout" };
        var adapter = CliCommon.AdapterOption();
        var cmd = new Command("eval", "Evaluate a model on a dataset: masked loss per trained token (with perplexity and bits per byte), or GSM8K accuracy by greedy generation")
        {
            model, adapter, data, type, metric, limit, tokenizer, chatTemplate, sequenceLen, threads, maxNew, batchSize, json,
        };
        cmd.SetAction((r, ct) => Task.FromResult(CliCommon.Run(() =>
        {
            if (r.GetValue(threads) is int t and > 0) Environment.SetEnvironmentVariable("DSS_THREADS", t.ToString(CultureInfo.InvariantCulture));
            if (r.GetValue(limit) is <= 0) throw new DeepSeekSharpException($"--limit must be positive (got {r.GetValue(limit)})");
            string dir = r.GetValue(model)!, dataPath = r.GetValue(data)!, metricName = r.GetValue(metric)!;
            string datasetType = r.GetValue(type) ?? (metricName == "gsm8k" ? "gsm8k" : throw new DeepSeekSharpException($"--type: give the dataset's type ({string.Join(", ", SftDatasets.Types)})"));
            if (metricName == "gsm8k" && datasetType != "gsm8k") throw new DeepSeekSharpException($"--metric gsm8k reads question/answer lines: --type must be gsm8k (got {datasetType})");
            if (!SftDatasets.Types.Contains(datasetType)) throw new DeepSeekSharpException($"--type: unknown dataset type '{datasetType}' (known: {string.Join(", ", SftDatasets.Types)})");
            if (!Directory.Exists(dir)) throw new DeepSeekSharpException($"{dir}: model folder not found");
            var config = DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(dir));
            if (!ModelCheckpoint.HasWeights(dir)) throw new DeepSeekSharpException($"{dir}: no *.safetensors weights in the model folder");
            string? adapterDir = r.GetValue(adapter);
            if (adapterDir is not null) AdapterFolders.Require(adapterDir);
            var sft = LoadTokenizer(dir, r.GetValue(tokenizer));
            if (!File.Exists(dataPath)) throw new DeepSeekSharpException($"{dataPath}: dataset file not found");
            var (templateName, templateJinja) = TemplateChoice(r.GetValue(chatTemplate)!, sft, datasetType);
            var run = new EvalRun(dir, adapterDir, dataPath, datasetType, r.GetValue(json));
            if (metricName == "gsm8k")
            {
                int newTokens = r.GetValue(maxNew), batch = r.GetValue(batchSize);
                if (newTokens <= 0) throw new DeepSeekSharpException($"--max-new-tokens must be positive (got {newTokens})");
                if (batch <= 0) throw new DeepSeekSharpException($"--batch-size must be positive (got {batch})");
                var items = Gsm8kEvaluator.Read(dataPath, r.GetValue(limit));
                if (items.Count == 0) throw new DeepSeekSharpException($"{dataPath}: the dataset has no examples");
                var template = ChatTemplate.Resolve(templateName, templateJinja, sft);
                var m = CliCommon.LoadForInference(dir, "fp32", adapterDir);
                var result = Gsm8kEvaluator.Evaluate(m, sft.Tokenizer, template, items, new Gsm8kOptions { MaxNewTokens = newTokens, BatchSize = batch },
                    new ProgressLines("problems"), ct);
                EvalOutput.WriteGsm8k(run, result);
            }
            else
            {
                int seqLen = r.GetValue(sequenceLen) ?? Math.Min(config.MaxPositionEmbeddings, DefaultSequenceLenCap);
                if (seqLen < 2) throw new DeepSeekSharpException($"--sequence-len must be at least 2 (got {seqLen})");
                if (seqLen > config.MaxPositionEmbeddings)
                    throw new DeepSeekSharpException($"--sequence-len {seqLen} exceeds the model's max_position_embeddings {config.MaxPositionEmbeddings}");
                var cfg = new TrainConfig
                {
                    Datasets = [new DatasetSpec(dataPath, datasetType)], SequenceLen = seqLen,
                    ChatTemplate = templateName, ChatTemplateJinja = templateJinja,
                };
                var loaded = SftDatasets.Load(cfg, sft, null, ct);
                var examples = loaded.Examples.Take(r.GetValue(limit) ?? int.MaxValue).Select(e => e.Example).ToList();
                var m = CliCommon.LoadForInference(dir, "fp32", adapterDir);
                var result = MaskedLossEvaluator.Evaluate(m, sft.Tokenizer, examples, MaskedLossEvaluator.DefaultBatchTokens, new ProgressLines("examples"), ct);
                EvalOutput.WriteLoss(run, result, loaded.Datasets[0], seqLen);
            }
            return 0;
        })));
        return cmd;
    }

    /// <summary>The tokenizer: --tokenizer (a tokenizer.json or its folder), else the model folder's; a model without one is an error.</summary>
    private static SftTokenizer LoadTokenizer(string modelDir, string? given)
    {
        if (given is null)
        {
            string own = Path.Combine(modelDir, "tokenizer.json");
            if (!File.Exists(own)) throw new DeepSeekSharpException($"{modelDir}: the model folder has no tokenizer.json; give --tokenizer PATH");
            return SftTokenizer.Load(own);
        }
        string file = Directory.Exists(given) ? Path.Combine(given, "tokenizer.json") : given;
        if (!File.Exists(file)) throw new DeepSeekSharpException($"{file}: tokenizer file not found");
        return SftTokenizer.Load(file);
    }

    /// <summary>The template's config name and, for a Jinja file, its text; checked here so the error names the option.</summary>
    private static (string Name, string? Jinja) TemplateChoice(string choice, SftTokenizer tokenizer, string datasetType)
    {
        bool chat = datasetType is "chat_template" or "gsm8k";
        if (choice == "deepseek_v3") return (choice, null);
        if (choice == "tokenizer_default")
        {
            if (chat && tokenizer.ChatTemplate is null)
                throw new DeepSeekSharpException($"{tokenizer.ConfigPath ?? tokenizer.Source}: the tokenizer has no chat_template; give --chat-template deepseek_v3 (built in) or a Jinja template file");
            return (choice, null);
        }
        if (!File.Exists(choice)) throw new DeepSeekSharpException($"{choice}: --chat-template is neither tokenizer_default, deepseek_v3 nor an existing Jinja file");
        return ("jinja", IO.InputFile.ReadAllText(choice, "chat template"));
    }

    /// <summary>Progress on stderr for runs long enough to need it: a line every 10 s, the first after 10 s.</summary>
    private sealed class ProgressLines(string unit) : IProgress<EvalProgress>
    {
        private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
        private readonly Stopwatch _sinceLine = Stopwatch.StartNew();

        public void Report(EvalProgress value)
        {
            if (_sinceLine.Elapsed < Interval || value.Done == value.Total) return;
            _sinceLine.Restart();
            string eta = value.Eta is TimeSpan left ? $", ETA {EvalOutput.Duration(left)}" : "";
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"eval: {value.Done:N0}/{value.Total:N0} {unit}, {value.ExamplesPerSecond:F2} {unit}/s{eta}"));
        }
    }
}

/// <summary>What an evaluation ran on, for its output.</summary>
internal sealed record EvalRun(string Model, string? Adapter, string Data, string Type, bool Json)
{
    /// <summary>The model as the output names it: its folder, and the adapter on it if any.</summary>
    public string Evaluated => Adapter is null ? Model : $"{Model} + adapter {Adapter}";
}

/// <summary>The results of <c>dss eval</c> as plain lines or one JSON object.</summary>
internal static class EvalOutput
{
    private static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static void WriteLoss(EvalRun run, MaskedLossResult result, SftDatasetStats stats, int sequenceLen)
    {
        if (run.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                metric = "loss", model = run.Model, adapter = run.Adapter, data = run.Data, type = run.Type, examples = result.Examples, trained_tokens = result.TrainedTokens,
                loss = Round(result.Loss, 6), perplexity = Round(result.Perplexity, 4), bits_per_byte = Round(result.BitsPerByte, 6),
                target_bytes = result.TargetBytes, total_nats = Round(result.TotalNats, 4), sequence_len = sequenceLen,
                dropped_too_long = stats.DroppedTooLong, dropped_untrained = stats.DroppedUntrained,
                seconds = Math.Round(result.Elapsed.TotalSeconds, 2),
            }, JsonOptions));
            return;
        }
        Console.WriteLine($"eval loss: {run.Data} ({run.Type}) on {run.Evaluated}");
        Line("examples", $"{result.Examples:N0}");
        Line("trained tokens", $"{result.TrainedTokens:N0} ({result.TargetBytes:N0} bytes of text)");
        Line("loss", $"{result.Loss:F4} nats per trained token");
        Line("perplexity", $"{result.Perplexity:F3}");
        Line("bits per byte", $"{result.BitsPerByte:F4}");
        if (stats.DroppedTooLong + stats.DroppedUntrained > 0)
            Line("not evaluated", $"{stats.DroppedTooLong:N0} longer than sequence_len {sequenceLen}, {stats.DroppedUntrained:N0} without a trained token");
        Line("time", $"{Duration(result.Elapsed)} ({result.Examples / Math.Max(result.Elapsed.TotalSeconds, 1e-9):F1} examples/s)");
    }

    public static void WriteGsm8k(EvalRun run, Gsm8kResult result)
    {
        if (run.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                metric = "gsm8k", model = run.Model, adapter = run.Adapter, data = run.Data, examples = result.Examples, correct = result.Correct,
                accuracy = Round(result.Accuracy, 6), no_answer = result.NoAnswer, hit_token_limit = result.HitTokenLimit,
                generated_tokens = result.GeneratedTokens, seconds = Math.Round(result.Elapsed.TotalSeconds, 2),
                samples = new { right = result.Right.Select(Sample), wrong = result.Wrong.Select(Sample) },
            }, JsonOptions));
            return;
        }
        Console.WriteLine($"eval gsm8k: {run.Data} on {run.Evaluated}");
        Line("accuracy", $"{result.Accuracy:P2} ({result.Correct:N0} of {result.Examples:N0} exact)");
        Line("no answer", $"{result.NoAnswer:N0} generations without a number");
        Line("cut at limit", $"{result.HitTokenLimit:N0} generations ended by --max-new-tokens, not EOS");
        Line("time", $"{Duration(result.Elapsed)} ({result.Examples / Math.Max(result.Elapsed.TotalSeconds, 1e-9):F2} problems/s, {result.GeneratedTokens / Math.Max(result.Elapsed.TotalSeconds, 1e-9):F1} tokens/s)");
        foreach (var (title, samples) in new[] { ("right", result.Right), ("wrong", result.Wrong) })
            foreach (var s in samples)
            {
                Console.WriteLine();
                Console.WriteLine($"── {title} ({s.Source}): reference {s.Reference}, answered {s.Predicted ?? "nothing"}");
                Console.WriteLine($"Q: {PrintableText.Escape(s.Question)}");
                Console.WriteLine($"A: {PrintableText.Escape(s.Generation)}");
            }
    }

    public static string Duration(TimeSpan t) =>
        t.TotalSeconds < 60 ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:F1} s")
        : t.TotalHours < 1 ? string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalMinutes}m{t.Seconds:D2}s")
        : string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalHours}h{t.Minutes:D2}m");

    private static object Sample(Gsm8kSample s) => new
    {
        source = s.Source, question = s.Question, reference = s.Reference, predicted = s.Predicted, correct = s.Correct, generation = s.Generation,
    };

    // NaN (no trained token, no byte) is not JSON: it is written as null.
    private static double? Round(double v, int digits) => double.IsFinite(v) ? Math.Round(v, digits) : null;

    private static void Line(string name, FormattableString value) =>
        Console.WriteLine($"  {name,-15}{value.ToString(CultureInfo.InvariantCulture)}");
}
