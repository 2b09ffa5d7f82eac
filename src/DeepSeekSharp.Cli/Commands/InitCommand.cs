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
        var dtype = new Option<string>("--dtype") { Description = "stored weight type: f32 or bf16", DefaultValueFactory = _ => "f32" };
        dtype.AcceptOnlyFromAmong("f32", "bf16");
        var overwrite = CliCommon.OverwriteOption();
        var cmd = new Command("init", "Create a random-init model folder (config.json + model.safetensors)") { config, preset, output, seed, dtype, overwrite };
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
            var model = new DeepSeekModel(cfg, materialize: true);
            ModelInit.InitializeRandom(model, r.GetValue(seed));
            string outDir = r.GetValue(output)!;
            var weightType = r.GetValue(dtype) == "bf16" ? DType.BF16 : DType.F32;
            ModelFolder.Write(outDir, tmp => ModelCheckpoint.WriteFiles(model, tmp, weightType, configJson: json), r.GetValue(overwrite), configPath);
            var count = ParameterCount.Of(model);
            Console.WriteLine($"wrote {outDir}: {count.Total:N0} parameters (+{count.Mtp:N0} MTP)");
            return 0;
        }));
        return cmd;
    }
}
