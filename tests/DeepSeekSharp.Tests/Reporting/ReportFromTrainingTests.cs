using System.Text.Json;
using System.Text.RegularExpressions;
using DeepSeekSharp.Reporting;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Reporting;

/// <summary>Real training runs: the report they write at the end, and <c>dss report</c> rendered in headless Chromium.</summary>
public class ReportFromTrainingTests
{
    private static string Corpus(string dir)
    {
        string path = Path.Combine(dir, "corpus.txt");
        var rng = new Random(5);
        var words = new[] { "the", "king", "speaks", "of", "war", "and", "peace", "to", "his", "court" };
        File.WriteAllText(path, string.Join(' ', Enumerable.Range(0, 4000).Select(_ => words[rng.Next(words.Length)])));
        return path;
    }

    private static TrainConfig Settings(string corpus, string output, params string[] extra) => TrainConfig.Load(null,
    [
        $"datasets={corpus}", $"output_dir={output}", "sequence_len=32", "micro_batch_size=4", "max_steps=6", "warmup_steps=2",
        "learning_rate=3e-3", "lr_scheduler=cosine", "eval_steps=3", "eval_batches=1", "sample_tokens=4", "save_steps=6",
        "logging_steps=1", "seed=3", .. extra,
    ]);

    [Fact]
    public void TrainingWritesItsConfigPerLayerMaxVioAndTheReportAtTheEnd()
    {
        string root = TestPaths.TempDir();
        try
        {
            string output = Path.Combine(root, "run");
            var log = new List<string>();
            var result = Trainer.Run(Settings(Corpus(root), output), new TrainOptions(), null, log.Add, TestContext.Current.CancellationToken);
            Assert.Equal(6, result.FinalStep);

            string report = Path.Combine(output, RunReport.FileName);
            Assert.True(File.Exists(report), "training must leave report.html in its output folder");
            Assert.Contains($"wrote {report}", log);
            string html = File.ReadAllText(report);
            foreach (string id in RunReportTests.LinePlots) Assert.DoesNotContain("data-empty", RunReportTests.Svg(html, id));
            // tiny-v3 has MoE layers 1-3 and one MTP module: their names come from the checkpoint's config.json.
            Assert.Contains("<title>MTP 1, step 6: MaxVio", RunReportTests.Svg(html, "heatmap-max-vio-0"));

            using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, TrainConfig.RunFileName)));
            Assert.Equal(32, config.RootElement.GetProperty("sequence_len").GetInt32());
            Assert.Equal(Path.Combine(root, "corpus.txt"), config.RootElement.GetProperty("datasets")[0].GetProperty("path").GetString());

            var train = File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(r => r.GetProperty("kind").GetString() == "train").ToList();
            Assert.Equal(6, train.Count);
            Assert.All(train, r =>
            {
                var perLayer = r.GetProperty("max_vio_per_layer").EnumerateArray().Select(v => v.GetSingle()).ToList();
                Assert.Equal(4, perLayer.Count);
                // The scalar is the mean over the model's 3 MoE layers (the MTP block's is reported, not averaged in).
                Assert.Equal(r.GetProperty("max_vio").GetSingle(), perLayer.Take(3).Average(), 4);
            });
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void AReportThatCannotBeWrittenIsAWarningNotAFailedRun()
    {
        string root = TestPaths.TempDir();
        try
        {
            string output = Path.Combine(root, "run");
            // A folder where the report file should go: the rename onto it fails.
            Directory.CreateDirectory(Path.Combine(output, RunReport.FileName));
            var log = new List<string>();
            var result = Trainer.Run(Settings(Corpus(root), output), new TrainOptions(), null, log.Add, TestContext.Current.CancellationToken);
            Assert.Equal(6, result.FinalStep);
            Assert.False(result.Interrupted);
            Assert.Contains(log, l => l.StartsWith("warning: run report not written:", StringComparison.Ordinal));
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void ComparedReportRendersInChromiumWithEveryPlotAndNoScriptError()
    {
        _ = HeadlessChromium.Executable; // before the training runs, so a machine without it fails at once
        string root = TestPaths.TempDir();
        try
        {
            string corpus = Corpus(root);
            string baseline = Path.Combine(root, "fp32");
            // A hostile run name and prompt: both reach the page, neither may run.
            string fp8 = Path.Combine(root, "fp8 <img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">");
            Trainer.Run(Settings(corpus, baseline), new TrainOptions(), null, _ => { }, TestContext.Current.CancellationToken);
            Trainer.Run(Settings(corpus, fp8, "precision=fp8", "sample_prompt=<script>document.body.setAttribute('data-pwned','2')</script>"),
                new TrainOptions(), null, _ => { }, TestContext.Current.CancellationToken);

            string report = Path.Combine(root, "compare.html");
            var r = DssProcess.Run("report", baseline, "--compare", fp8, "--out", report);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal($"wrote {report}", r.Stdout.Trim());

            var page = HeadlessChromium.DumpDom(report);
            Assert.DoesNotContain("Uncaught", page.Log);
            Assert.Matches("<body[^>]* data-report-script=\"ok\"", page.Dom);
            Assert.DoesNotContain("data-pwned", Regex.Match(page.Dom, "<body[^>]*>").Value);
            foreach (string id in RunReportTests.LinePlots.Append("plot-vs-baseline"))
            {
                string svg = RunReportTests.Svg(page.Dom, id);
                Assert.Contains("data-readout=\"ready\"", svg);
                Assert.Matches("<title id=\"[a-z-]+-title\">[^<]+</title>", svg);
                var lines = RunReportTests.PathData(svg);
                Assert.True(lines.Count >= 2, $"{id}: expected a line per run, got {lines.Count}");
                Assert.All(lines, d => Assert.Matches("^M[0-9.]+ [0-9.]+(L[0-9.]+ [0-9.]+)+", d));
            }
            foreach (string id in new[] { "heatmap-max-vio-0", "heatmap-max-vio-1", "heatmap-expert-load-0-0", "heatmap-expert-load-1-1" })
                Assert.Contains("<rect", RunReportTests.Svg(page.Dom, id));
            Assert.Contains("FP8 vs baseline", page.Dom);
        }
        finally { Directory.Delete(root, true); }
    }
}
