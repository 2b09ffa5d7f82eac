using System.CommandLine;
using System.Globalization;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;
using Spectre.Console;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss distill dump</c>: a teacher's top-k log-probabilities at every trained position, for offline distillation.</summary>
internal static class DistillCommand
{
    public static Command Create()
    {
        var group = new Command("distill", "Knowledge distillation: offline teacher dumps (docs/distillation.md)");
        var teacher = new Option<string>("--teacher") { Description = "teacher model folder", Required = true };
        var config = new Option<string?>("--config") { Description = "YAML training config whose datasets (tokenizer, chat_template, sequence_len, ...) are dumped" };
        var set = new Option<string[]>("--set") { Description = "override a config key: --set key=value (repeatable)", AllowMultipleArgumentsPerToken = false };
        var data = new Option<string?>("--data") { Description = "one dataset file instead of the config's datasets" };
        var type = new Option<string>("--type") { Description = $"its type: {string.Join(", ", SftDatasets.Types)}", DefaultValueFactory = _ => "completion" };
        type.AcceptOnlyFromAmong(SftDatasets.Types);
        var topK = new Option<int>("--top-k") { Description = "teacher ids kept per position", DefaultValueFactory = _ => 32 };
        var output = CliCommon.OutOption("output folder (created; must be empty): kd.json + kd-NNNNN.safetensors shards");
        var dump = new Command("dump", "Run the teacher over the training data and write its top-k ids and log-probabilities (fp32, τ = 1) at every trained position")
        {
            teacher, config, set, data, type, topK, output,
        };
        dump.SetAction((r, ct) => Task.FromResult(CliCommon.Run(() =>
        {
            var cfg = TrainConfig.Load(r.GetValue(config), r.GetValue(set) ?? []);
            if (r.GetValue(data) is { } path) cfg.Datasets = [new DatasetSpec(path, r.GetValue(type))];
            if (cfg.Datasets.Count == 0) throw new DeepSeekSharpException("give --data FILE or a --config with datasets");
            var sft = SftDatasets.Load(cfg, SftTokenizer.FromConfig(cfg), line => Console.Error.WriteLine(line), ct);
            string teacherDir = r.GetValue(teacher)!;
            var model = ModelCheckpoint.Load(teacherDir);
            int k = r.GetValue(topK);
            if (k < 1 || k > model.Config.VocabSize) throw new DeepSeekSharpException($"--top-k must be in [1, {model.Config.VocabSize}] (got {k})");
            foreach (var e in sft.Examples)
                foreach (int id in e.Example.InputIds)
                    if (id >= model.Config.VocabSize) throw new DeepSeekSharpException($"{teacherDir}: token id {id} of the data is outside the teacher's vocabulary {model.Config.VocabSize}");
            var writer = new TeacherDumpWriter(r.GetValue(output)!, k, new Dictionary<string, string> { ["teacher"] = teacherDir, ["vocab_size"] = model.Config.VocabSize.ToString(CultureInfo.InvariantCulture) });
            var examples = sft.Examples.Select(e => e.Example).ToList();
            WithProgress(examples.Count, progress => TeacherDumper.Dump(model, examples, writer, progress, ct));
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"dump: {writer.Sequences:N0} sequences, {writer.Rows:N0} positions of top-{k} in {r.GetValue(output)}"));
            return 0;
        })));
        group.Subcommands.Add(dump);
        return group;
    }

    /// <summary>A progress bar on an interactive terminal; a line every 10 s otherwise.</summary>
    private static void WithProgress(int total, Action<IProgress<long>> run)
    {
        if (Console.IsErrorRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            run(new Sync(done =>
            {
                if (clock.Elapsed < TimeSpan.FromSeconds(10)) return;
                clock.Restart();
                Console.Error.WriteLine($"dump: {done:N0}/{total:N0} sequences");
            }));
            return;
        }
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("teacher top-k", maxValue: Math.Max(1, total));
                run(new Sync(done => task.Value = done));
            });
    }

    private sealed class Sync(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
