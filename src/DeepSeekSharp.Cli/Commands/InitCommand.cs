using System.CommandLine;
using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss init</c>: writes a randomly initialised model folder from a config or a built-in preset.</summary>
internal static class InitCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "HF config.json to build (or a folder holding one)" };
        var preset = new Option<string?>("--preset") { Description = $"built-in config instead of --config: {string.Join(", ", Presets.All.Keys)}" };
        var output = CliCommon.OutOption("output model folder");
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype")
        {
            Description = "stored weight type: f32, bf16, or fp8 (E4M3 with 128x128 scales for attention/MLP/expert Linears, BF16 for the rest, as DeepSeek's FP8 release)",
            DefaultValueFactory = _ => "f32",
        };
        dtype.AcceptOnlyFromAmong("f32", "bf16", "fp8");
        var overwrite = CliCommon.OverwriteOption();
        var cmd = new Command("init", "Create a random-init model folder (config.json + model.safetensors), written tensor by tensor (any size fits)") { config, preset, output, seed, dtype, overwrite };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string? configPath = r.GetValue(config), presetName = r.GetValue(preset);
            string json;
            if (presetName is not null)
            {
                if (!Presets.All.TryGetValue(presetName, out json!)) throw new DeepSeekSharpException($"--preset: unknown preset '{presetName}'");
            }
            else if (configPath is not null)
            {
                string file = ModelCheckpoint.ConfigPath(configPath);
                json = DeepSeekSharp.IO.InputFile.ReadAllText(file, "config file");
            }
            else throw new DeepSeekSharpException("give --config FILE or --preset NAME");
            var cfg = DeepSeekConfig.Parse(json, configPath ?? presetName!);
            // One tensor at a time is in memory: the largest must fit, not the model.
            ModelFootprint.EnsureFits(cfg, ModelFootprint.Of(cfg).LargestTensor * sizeof(float), "its largest tensor");
            string outDir = r.GetValue(output)!;
            var weightType = r.GetValue(dtype) switch { "bf16" => CheckpointDType.Bf16, "fp8" => CheckpointDType.Fp8, _ => CheckpointDType.F32 };
            var lastReport = TimeSpan.Zero;
            ModelFolder.Write(outDir, tmp => RandomCheckpointWriter.Write(tmp, json, weightType, r.GetValue(seed), p =>
            {
                // A line every 10 s for large models (minutes of work); small ones finish before the first.
                if (p.Elapsed - lastReport < TimeSpan.FromSeconds(10)) return;
                lastReport = p.Elapsed;
                double rate = p.Written / Math.Max(1e-9, p.Elapsed.TotalSeconds);
                Console.Error.WriteLine(FormattableString.Invariant(
                    $"init: {p.Written / 1e9:F2} / {p.Total / 1e9:F2} GB ({100.0 * p.Written / p.Total:F0} %), {rate / 1e6:F0} MB/s, ETA {TimeSpan.FromSeconds((p.Total - p.Written) / Math.Max(1, rate)):hh\\:mm\\:ss}"));
            }), r.GetValue(overwrite), configPath);
            var count = ParameterCount.Of(new DeepSeekModel(cfg, materialize: false));
            Console.WriteLine($"wrote {outDir}: {count.Total:N0} parameters (+{count.Mtp:N0} MTP)");
            return 0;
        }));
        return cmd;
    }
}
