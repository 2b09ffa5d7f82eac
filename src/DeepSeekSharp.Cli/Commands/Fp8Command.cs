using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss fp8 study</c>: the FP8 GEMM accumulation-precision study of docs/fp8.md.</summary>
internal static class Fp8Command
{
    public static Command Create()
    {
        var group = new Command("fp8", "FP8 tools");
        var json = new Option<bool>("--json") { Description = "one JSON line per K" };
        var bits = new Option<int>("--accumulator-bits") { Description = "significant bits of the emulated tensor-core accumulator", DefaultValueFactory = _ => 14 };
        var study = new Command("study", "Relative error of FP8 GEMMs vs fp64 for K = 128..16384: promotion every 128 vs a limited-precision accumulator vs per-tensor scaling") { json, bits };
        study.SetAction(r => CliCommon.Run(() =>
        {
            int[] ks = [128, 256, 512, 1024, 2048, 4096, 8192, 16384];
            if (!r.GetValue(json))
            {
                Console.WriteLine("| K | promoted (N_C=128) | no promotion, 14-bit acc. (truncating) | no promotion, 14-bit acc. (nearest) | per-tensor scale, promoted | accumulation only: promoted | accumulation only: 14-bit truncating |");
                Console.WriteLine("|---|---|---|---|---|---|---|");
            }
            foreach (var row in Fp8ErrorStudy.Run(ks, accumulatorBits: r.GetValue(bits)))
                Console.WriteLine(r.GetValue(json) ? JsonSerializer.Serialize(row) : string.Create(CultureInfo.InvariantCulture,
                    $"| {row.K} | {row.Promoted:P3} | {row.LimitedAccumulator:P3} | {row.LimitedNearest:P3} | {row.PerTensorPromoted:P3} | {row.PromotedAccumulationOnly:P4} | {row.LimitedAccumulationOnly:P3} |"));
            return 0;
        }));
        group.Subcommands.Add(study);
        return group;
    }

    public static Command Quantize()
    {
        var model = CliCommon.ModelOption();
        var output = CliCommon.OutOption("output folder for the FP8 checkpoint");
        var dtype = new Option<string>("--dtype") { Description = "type of the weights that stay high precision: f32 or bf16", DefaultValueFactory = _ => "f32" };
        dtype.AcceptOnlyFromAmong("f32", "bf16");
        var overwrite = CliCommon.OverwriteOption();
        var cmd = new Command("quantize", "Write a DeepSeek-V3 FP8 checkpoint (E4M3 weights with 128x128 weight_scale_inv blocks)") { model, output, dtype, overwrite };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            Fp8Checkpoint.Quantize(r.GetValue(model)!, r.GetValue(output)!, r.GetValue(dtype) == "bf16" ? DeepSeekSharp.Tensors.DType.BF16 : DeepSeekSharp.Tensors.DType.F32, r.GetValue(overwrite));
            Console.WriteLine($"wrote {r.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }

    public static Command Dequantize()
    {
        var model = CliCommon.ModelOption();
        var output = CliCommon.OutOption("output folder");
        var dtype = new Option<string>("--dtype") { Description = "f32 or bf16", DefaultValueFactory = _ => "bf16" };
        dtype.AcceptOnlyFromAmong("f32", "bf16");
        var overwrite = CliCommon.OverwriteOption();
        var cmd = new Command("dequantize", "Turn an FP8 (block-scaled) checkpoint back into BF16 or F32") { model, output, dtype, overwrite };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            Fp8Checkpoint.Dequantize(r.GetValue(model)!, r.GetValue(output)!, r.GetValue(dtype) == "bf16" ? DeepSeekSharp.Tensors.DType.BF16 : DeepSeekSharp.Tensors.DType.F32, r.GetValue(overwrite));
            Console.WriteLine($"wrote {r.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }
}
