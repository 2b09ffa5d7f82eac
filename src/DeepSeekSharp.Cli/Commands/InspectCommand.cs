using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss inspect</c>: architecture summary and parameter counts, from config.json alone if need be.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "model folder, or a config.json (weights are not needed)", Required = true };
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of text" };
        var cmd = new Command("inspect", "Summarise a model's architecture and count its parameters (total and activated per token)") { model, json };
        var plan = InspectParallel.AddTo(cmd);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            // From the config alone: no model is built, so any size is answered at once.
            var config = DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(r.GetValue(model)!));
            var summary = ModelSummary.Of(config);
            if (plan.Requested(r))
            {
                // The layout estimate walks the module tree: a shape-only model (no storage).
                var estimate = plan.Estimate(r, ModelCheckpoint.LoadMeta(r.GetValue(model)!));
                Console.WriteLine(r.GetValue(json) ? JsonSerializer.Serialize(estimate, InspectParallel.Json) : summary.ToText() + Environment.NewLine + estimate.ToText());
                return 0;
            }
            Console.WriteLine(r.GetValue(json) ? JsonSerializer.Serialize(summary, SnakeCase) : summary.ToText());
            return 0;
        }));
        return cmd;
    }

    // snake_case keys, like every other JSON dss writes.
    private static readonly JsonSerializerOptions SnakeCase = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
}
