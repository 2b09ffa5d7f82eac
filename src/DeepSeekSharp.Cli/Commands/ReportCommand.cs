using System.CommandLine;
using DeepSeekSharp.Reporting;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss report</c>: a run folder's metrics as one self-contained HTML page (inline SVG, no network).</summary>
internal static class ReportCommand
{
    public static Command Create()
    {
        var runDir = new Argument<string>("RUN_DIR") { Description = "a dss train output folder (metrics.jsonl, train_config.json, checkpoints)" };
        var compare = new Option<string[]>("--compare")
        {
            Description = "another run folder to overlay (repeatable); RUN_DIR is the baseline they are compared with",
            AllowMultipleArgumentsPerToken = false,
        };
        var outFile = new Option<string?>("--out") { Description = $"the HTML file to write (default RUN_DIR/{RunReport.FileName})" };
        var cmd = new Command("report", "Write an HTML report of a training run (loss, validation, LR, gradient norm, throughput, expert load, config), optionally compared with other runs")
        {
            runDir, compare, outFile,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string path = RunReport.Write(r.GetValue(runDir)!, r.GetValue(compare) ?? [], r.GetValue(outFile));
            Console.WriteLine($"wrote {path}");
            return 0;
        }));
        return cmd;
    }
}
