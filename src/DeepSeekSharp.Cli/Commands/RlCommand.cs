using System.CommandLine;
using System.Globalization;
using DeepSeekSharp.Rl;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss rl</c>: GRPO after SFT (rollouts, rule-based rewards, the clipped objective), and the synthetic task it can learn.</summary>
internal static class RlCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "GRPO run YAML (TRL's names: num_generations, max_completion_length, beta, epsilon, loss_type, reward_funcs, ...; see docs/rl.md)", Required = true };
        var set = new Option<string[]>("--set") { Description = "override one key (key=value), may repeat", AllowMultipleArgumentsPerToken = false };
        var resume = new Option<bool>("--resume") { Description = "continue the run in output_dir from its latest checkpoint, exactly as if it had not stopped" };
        var stopAt = new Option<int?>("--stop-at-step") { Description = "save and stop after this step, as if interrupted" };
        var overwrite = new Option<bool>("--overwrite") { Description = "start a new run in an output_dir that holds a previous one, deleting its checkpoints and metrics" };
        var cmd = new Command("rl", "Reinforcement learning after SFT: GRPO with rule-based rewards (DeepSeek-R1's recipe)") { config, set, resume, stopAt, overwrite };
        cmd.SetAction((r, ct) => Task.FromResult(CliCommon.Run(() =>
        {
            var cfg = GrpoConfig.Load(r.GetValue(config), r.GetValue(set) ?? []);
            var result = GrpoTrainer.Run(cfg, new GrpoRunOptions(r.GetValue(stopAt), r.GetValue(resume), r.GetValue(overwrite)), line => Console.Error.WriteLine(line), ct);
            Console.WriteLine(result.Interrupted
                ? $"stopped at step {result.Steps}; continue with --resume (checkpoint {result.FinalCheckpoint})"
                : string.Create(CultureInfo.InvariantCulture,
                    $"done: {result.Steps} steps; test accuracy {Percent(result.AccuracyBefore)} → {Percent(result.AccuracyAfter)}; policy in {result.FinalCheckpoint}"));
            return 0;
        })));
        cmd.Subcommands.Add(TaskCommand());
        return cmd;
    }

    private static string Percent(double a) => double.IsNaN(a) ? "n/a" : a.ToString("P1", CultureInfo.InvariantCulture);

    private static Command TaskCommand()
    {
        var output = CliCommon.OutOption("folder for train.jsonl and test.jsonl");
        var train = new Option<int>("--train") { Description = "training problems", DefaultValueFactory = _ => 5000 };
        var test = new Option<int>("--test") { Description = "test problems (never among the training ones)", DefaultValueFactory = _ => 500 };
        var max = new Option<int>("--max-operand") { Description = "operands are uniform in [0, max]", DefaultValueFactory = _ => 99 };
        var ops = new Option<string>("--operators") { Description = "a subset of +-*", DefaultValueFactory = _ => "+-" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var cmd = new Command("task", "Write the synthetic arithmetic task (GSM8K's JSONL form: question, answer ending in #### N) for SFT, GRPO and dss eval")
        {
            output, train, test, max, ops, seed,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var (trainPath, testPath) = ArithmeticTask.Write(r.GetValue(output)!, r.GetValue(train), r.GetValue(test), r.GetValue(seed), r.GetValue(max), r.GetValue(ops)!);
            Console.WriteLine($"wrote {trainPath} ({r.GetValue(train)} problems) and {testPath} ({r.GetValue(test)})");
            return 0;
        }));
        return cmd;
    }
}
