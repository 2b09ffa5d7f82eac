using System.CommandLine;
using DeepSeekSharp.IO.HfCheckpoint;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.FineTuning.Lora;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss merge</c>: a LoRA or ESFT adapter merged into its base, written as a complete model folder, with the error the merge introduced.</summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelOption();
        model.Description = "base model folder the adapter was trained on (config.json + safetensors, F32/BF16 or FP8)";
        var adapter = new Option<string>("--adapter") { Description = "adapter folder: PEFT LoRA (adapter_config.json + adapter_model.safetensors) or ESFT (expert_cfg.json + the trained experts' safetensors), e.g. a LoRA or ESFT run's checkpoint-<step>", Required = true };
        var output = CliCommon.OutOption("output folder for the merged model (written beside it, then renamed into place)");
        var dtype = new Option<string?>("--dtype") { Description = "storage of the merged weights: f32, bf16 or fp8 (E4M3, 128x128 blocks); default: the base's (an FP8 base stays FP8)" };
        dtype.AcceptOnlyFromAmong("f32", "bf16", "fp8");
        var probe = new Option<int>("--probe-tokens") { Description = "tokens of the fixed probe text (through the base's tokenizer.json; fixed ids without one) on which the merged model's logits are compared with the adapter-on model's (0 = skip)", DefaultValueFactory = _ => LoraMerge.DefaultProbeTokens };
        var overwrite = CliCommon.OverwriteOption();
        var json = new Option<bool>("--json") { Description = "print the result as one JSON object" };
        var cmd = new Command("merge", "Merge a LoRA adapter (W' = W + scale·B·A, modules_to_save replaced) or an ESFT adapter (its trained experts replaced) into its base model and write a complete HF model folder")
        {
            model, adapter, output, dtype, probe, overwrite, json,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            CheckpointDType? weights = r.GetValue(dtype) switch { "f32" => CheckpointDType.F32, "bf16" => CheckpointDType.Bf16, "fp8" => CheckpointDType.Fp8, _ => null };
            var report = LoraMerge.Merge(r.GetValue(model)!, r.GetValue(adapter)!, r.GetValue(output)!, weights, r.GetValue(overwrite), r.GetValue(probe), new ProgressLines());
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    output = report.OutputDir, dtype = Name(report.Weights), merged_linears = report.MergedLinears, replaced_tensors = report.ReplacedTensors,
                    max_stored_weight_error = report.MaxStoredError, max_abs_weight = report.MaxWeight, probe_tokens = report.ProbeTokens,
                    max_logit_difference = report.MaxLogitDifference, mean_logit_difference = report.MeanLogitDifference, logit_scale = report.LogitScale,
                }));
                return 0;
            }
            Console.WriteLine($"wrote {report.OutputDir} ({Name(report.Weights)}): {report.MergedLinears} Linear(s) merged, {report.ReplacedTensors} tensor(s) replaced (modules_to_save, ESFT experts)");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  weight error   max |stored W' - (W + scale·B·A)| = {report.MaxStoredError:G3} (largest |W'| {report.MaxWeight:G3}; {StorageNote(report.Weights)})"));
            if (report.ProbeTokens > 0)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  logit error    max |merged - adapter on (fp32)| = {report.MaxLogitDifference:G3}, mean {report.MeanLogitDifference:G3}, over {report.ProbeTokens} probe tokens (largest |logit| {report.LogitScale:G3})"));
            return 0;
        }));
        return cmd;
    }

    private static string Name(CheckpointDType w) => w switch { CheckpointDType.F32 => "f32", CheckpointDType.Bf16 => "bf16", _ => "fp8" };

    private static string StorageNote(CheckpointDType w) => w switch
    {
        CheckpointDType.F32 => "f32 stores the merged weights exactly",
        CheckpointDType.Bf16 => "BF16 rounding",
        _ => "FP8 rounding of the blocks the merge changed (an FP8 base's other blocks are copied as stored), at most 1/28 of a block's amax",
    };

    /// <summary>Per-tensor progress on stderr for merges long enough to need it: a line every 10 s.</summary>
    private sealed class ProgressLines : IProgress<MergeProgress>
    {
        private readonly Stopwatch _sinceLine = Stopwatch.StartNew();

        public void Report(MergeProgress value)
        {
            if (_sinceLine.Elapsed < TimeSpan.FromSeconds(10) || value.Done == value.Total) return;
            _sinceLine.Restart();
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"merge: {value.Done:N0}/{value.Total:N0} tensors ({value.Tensor})"));
        }
    }
}
