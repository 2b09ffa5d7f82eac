using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.FineTuning.Esft;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli.Commands;

/// <summary>
/// <c>dss esft score</c> and <c>dss esft select</c>: expert-specialised fine-tuning's relevance scores of the routed
/// experts on a task's data, and the experts to train chosen from them (docs/fine-tuning.md, ESFT).
/// </summary>
internal static class EsftCommand
{
    public static Command Create()
    {
        var group = new Command("esft", "Expert-specialised fine-tuning: score the routed experts on task data, choose the experts to train");
        group.Subcommands.Add(Score());
        group.Subcommands.Add(Select());
        return group;
    }

    private static Command Score()
    {
        var model = CliCommon.ModelOption();
        var data = new Option<string>("--data") { Description = "the task's data: a fine-tuning dataset (JSON lines) or a pre-tokenised token file", Required = true };
        string[] types = [.. SftDatasets.Types, "bin16", "bin32"];
        var type = new Option<string>("--type") { Description = $"dataset type: {string.Join(", ", types)} (bin16/bin32: sequence i is tokens [i·L, (i+1)·L), all counted; the others: an example's trained tokens count)", Required = true };
        type.AcceptOnlyFromAmong(types);
        var samples = new Option<int>("--samples") { Description = "sequences to score (N; ESFT used 32)", DefaultValueFactory = _ => 32 };
        var seq = new Option<int?>("--seq") { Description = "sequence length L (token files) and longest example kept (default: the model's max_position_embeddings, at most 4096)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.json (or its folder) when the model folder has none (fine-tuning types)" };
        var chatTemplate = new Option<string>("--chat-template") { Description = "tokenizer_default, deepseek_v3 (built in) or a Jinja template file", DefaultValueFactory = _ => "tokenizer_default" };
        var weights = CliCommon.WeightsOption();
        var output = CliCommon.OutOption("score file to write (the ESFT release's summary.json layout)");
        var cmd = new Command("score", "Run the model without gradients over N sequences of task data and write every routed expert's token and gate score per MoE layer")
        {
            model, data, type, samples, seq, tokenizer, chatTemplate, weights, output,
        };
        cmd.SetAction((r, ct) => Task.FromResult(CliCommon.Run(() =>
        {
            string dir = r.GetValue(model)!;
            if (!Directory.Exists(dir)) throw new DeepSeekSharpException($"{dir}: model folder not found");
            var config = DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(dir));
            if (!config.HasMoe) throw new DeepSeekSharpException($"{dir}: the model has no routed experts to score");
            int n = r.GetValue(samples);
            if (n < 1) throw new DeepSeekSharpException($"--samples must be ≥ 1 (got {n})");
            int length = r.GetValue(seq) ?? Math.Min(config.MaxPositionEmbeddings, 4096);
            if (length < 1 || length > config.MaxPositionEmbeddings)
                throw new DeepSeekSharpException($"--seq must be in [1, max_position_embeddings = {config.MaxPositionEmbeddings}] (got {length})");
            string template = r.GetValue(chatTemplate)!;
            var cfg = new TrainConfig
            {
                BaseModel = dir, Tokenizer = r.GetValue(tokenizer) ?? "byte", SequenceLen = Math.Max(2, length),
                Datasets = [new DatasetSpec(r.GetValue(data)!, r.GetValue(type))],
                ChatTemplate = template is "tokenizer_default" or "deepseek_v3" ? template : "jinja",
                ChatTemplateJinja = template is "tokenizer_default" or "deepseek_v3" ? null : IO.InputFile.ReadAllText(template, "chat template"),
            };
            string outPath = r.GetValue(output)!;
            var sequences = ScoringData.FromConfig(cfg, n, config.VocabSize, line => Console.Error.WriteLine(line), ct);
            var m = CliCommon.LoadForInference(dir, r.GetValue(weights)!);
            var clock = Stopwatch.StartNew();
            var scores = ExpertScorer.Score(m, sequences, new ProgressLines(sequences.Count, clock), ct);
            scores.Write(outPath);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {outPath}: {scores.Token.Count} MoE layer(s) × {config.NRoutedExperts} experts, scored on {scores.Sequences} sequence(s), {scores.Tokens:N0} counted tokens, in {clock.Elapsed.TotalSeconds:F1} s"));
            return 0;
        })));
        return cmd;
    }

    private static Command Select()
    {
        var scores = new Option<string>("--scores") { Description = "score file: `dss esft score` output or the ESFT release's results/expert_scores/<task>/summary.json", Required = true };
        var method = new Option<string>("--method") { Description = "token (ESFT-Token; the paper's p = 0.2) or gate (ESFT-Gate; p = 0.1)", Required = true };
        method.AcceptOnlyFromAmong("token", "gate");
        var p = new Option<double>("--p") { Description = "per layer, experts are added in descending score until their cumulative score reaches P", Required = true };
        var shared = new Option<bool>("--train-shared-experts") { Description = "train the shared experts too" };
        var nonExpert = new Option<bool>("--train-non-expert-modules") { Description = "train everything outside the experts too (attention, norms, embeddings, routers, head)" };
        var model = new Option<string?>("--model") { Description = "model folder (or config.json) to check the scores against: MoE layers and experts per layer" };
        var output = CliCommon.OutOption("expert config to write (the ESFT release's format)");
        var cmd = new Command("select", "Choose the experts to train per layer from a score file; write an ESFT expert config")
        {
            scores, method, p, shared, nonExpert, model, output,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string scorePath = r.GetValue(scores)!;
            var table = ExpertScores.Read(scorePath);
            if (r.GetValue(model) is { } modelPath) table.Validate(DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(modelPath)), scorePath);
            var config = ExpertSelection.Select(table.Of(r.GetValue(method)!), r.GetValue(p), r.GetValue(shared), r.GetValue(nonExpert));
            string outPath = r.GetValue(output)!;
            config.Write(outPath);
            int experts = table.Token[0].Experts.Length, layers = config.Experts.Count;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {outPath}: {config.SelectedCount} of {layers * experts} routed experts in {layers} layer(s) ({(double)config.SelectedCount / Math.Max(1, layers * experts):P1}), {config.Experts.Min(l => l.Value.Length)}-{config.Experts.Max(l => l.Value.Length)} per layer"));
            return 0;
        }));
        return cmd;
    }

    /// <summary>Progress on stderr for long scoring passes: a line every 10 s.</summary>
    private sealed class ProgressLines(int total, Stopwatch clock) : IProgress<int>
    {
        private readonly Stopwatch _sinceLine = Stopwatch.StartNew();

        public void Report(int done)
        {
            if (_sinceLine.Elapsed < TimeSpan.FromSeconds(10) || done == total) return;
            _sinceLine.Restart();
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"esft score: {done}/{total} sequences, {clock.Elapsed.TotalSeconds:F0} s"));
        }
    }
}
