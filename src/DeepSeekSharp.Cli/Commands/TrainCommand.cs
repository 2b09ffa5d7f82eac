using System.CommandLine;
using System.Globalization;
using DeepSeekSharp.Training;
using Spectre.Console;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss train</c>: pre-training (and, later, fine-tuning) from a YAML config.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "YAML training config (keys: docs/config.md); omit to use only --set" };
        var set = new Option<string[]>("--set") { Description = "override a config key: --set key=value (repeatable)", AllowMultipleArgumentsPerToken = false };
        var maxSteps = new Option<int?>("--max-steps") { Description = "planned run length in optimizer steps (the LR schedule follows it)" };
        var stopAt = new Option<int?>("--stop-at-step") { Description = "save and stop after this step, as if interrupted" };
        var outputDir = new Option<string?>("--output-dir") { Description = "where checkpoints, metrics and samples go" };
        var resume = new Option<string?>("--resume") { Description = "an output folder: continue from its latest checkpoint" };
        var weightsOnly = new Option<bool>("--resume-weights-only")
        {
            Description = "with --resume: continue from the latest checkpoint's weights even if its optimizer.safetensors or trainer_state.json is missing (AdamW restarts from zero moments: not an exact resume)",
        };
        var overwrite = new Option<bool>("--overwrite") { Description = "start a new run in an output folder that holds a previous one, deleting its checkpoints, metrics and TensorBoard events" };
        var precision = new Option<string?>("--precision") { Description = "fp32, bf16 or fp8 (same as --set precision=...)" };
        precision.AcceptOnlyFromAmong(DeepSeekSharp.Fp8.Fp8Training.Precisions);
        var cmd = new Command("train", "Train a DeepSeek-V3-architecture model (MTP, bias balancing, V3 schedule) from a YAML config")
        {
            config, set, maxSteps, stopAt, outputDir, resume, weightsOnly, overwrite, precision,
        };
        // Under mpirun/srun every rank runs this with the same arguments (data parallel); alone it is a world of one.
        cmd.SetAction((r, ct) => Task.FromResult(CliCommon.RunDistributed(world =>
        {
            var overrides = (r.GetValue(set) ?? []).ToList();
            if (r.GetValue(maxSteps) is int ms) overrides.Add($"max_steps={ms}");
            if (r.GetValue(precision) is string p) overrides.Add($"precision={p}");
            if (r.GetValue(outputDir) is string od) overrides.Add($"output_dir={od}");
            else if (r.GetValue(resume) is string rd) overrides.Add($"output_dir={rd}");
            var cfg = TrainConfig.Load(r.GetValue(config), overrides);
            if (cfg.Threads > 0) Environment.SetEnvironmentVariable("DSS_THREADS", cfg.Threads.ToString(CultureInfo.InvariantCulture));
            if (r.GetValue(weightsOnly) && r.GetValue(resume) is null) throw new DeepSeekSharpException("--resume-weights-only: give --resume DIR too");
            var opts = new TrainOptions(r.GetValue(stopAt), r.GetValue(resume), r.GetValue(weightsOnly), r.GetValue(overwrite));
            TrainResult result;
            try { result = RunWithProgress(cfg, opts, world, ct); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Stopped while tokenising or loading: nothing was trained, so there is nothing to save. Ranks that were
                // not signalled may wait in a collective for this one, so a parallel job ends through the error path.
                if (world.Size > 1) throw new DeepSeekSharpException("stopped before the first step; nothing to save");
                Console.WriteLine("stopped before the first step; nothing to save");
                return 0;
            }
            if (world.Rank != 0) return 0;
            Console.WriteLine(result switch
            {
                { Interrupted: true, LastCheckpoint: null } => $"stopped at step {result.FinalStep}; nothing saved",
                { Interrupted: true } => $"stopped at step {result.FinalStep}; resume with --resume {cfg.OutputDir}",
                _ => $"finished at step {result.FinalStep}; final checkpoint {result.LastCheckpoint}",
            });
            // A run stopped by a signal exits with the signal's code (DssApp), whatever is returned here.
            return 0;
        })));
        return cmd;
    }

    private static TrainResult RunWithProgress(TrainConfig cfg, TrainOptions opts, DeepSeekSharp.Distributed.ICommunicator world, CancellationToken ct)
    {
        void Log(string line) => Console.WriteLine($"[{DateTime.Now:HH:mm:ss}] {line}");
        if (world.Size > 1)
            // Ranks print through the launcher's pipe; rank 0 alone prints (Trainer.Run silences the others).
            return Trainer.Run(cfg, opts, world, new SyncProgress(p =>
            {
                if (p.Step % cfg.LoggingSteps != 0 && p.Step != p.TotalSteps) return;
                Log(string.Create(CultureInfo.InvariantCulture, $"step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} lr {p.LearningRate:E2} {p.TokensPerSecond:F0} tok/s"));
            }), Log, ct);
        bool interactive = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        if (!interactive)
        {
            // Redirected output gets one plain line per logging interval (Spectre prints nothing when redirected).
            var sync = new SyncProgress(p =>
            {
                if (p.Step % cfg.LoggingSteps != 0 && p.Step != p.TotalSteps) return;
                Log(string.Create(CultureInfo.InvariantCulture, $"step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} lr {p.LearningRate:E2} {p.TokensPerSecond:F0} tok/s"));
            });
            return Trainer.Run(cfg, opts, sync, Log, ct);
        }
        TrainResult? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: cfg.MaxSteps);
                var sync = new SyncProgress(p =>
                {
                    task.Value = p.Step;
                    task.Description = string.Create(CultureInfo.InvariantCulture, $"step {p.Step} loss {p.Loss:F3} {p.TokensPerSecond:F0} tok/s");
                });
                result = Trainer.Run(cfg, opts, sync, line => AnsiConsole.MarkupLine(Markup.Escape(line)), ct);
            });
        return result!;
    }

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post to the thread pool and reorder lines).</summary>
    private sealed class SyncProgress(Action<TrainProgress> report) : IProgress<TrainProgress>
    {
        public void Report(TrainProgress value) => report(value);
    }
}
