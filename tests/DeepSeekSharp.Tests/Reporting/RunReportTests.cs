using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using DeepSeekSharp.Reporting;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Reporting;

/// <summary>The report page built from run folders written here (metrics shaped like the trainer's), checked as text.</summary>
public partial class RunReportTests
{
    internal static readonly string[] LinePlots = ["plot-loss", "plot-val-loss", "plot-val-bpb", "plot-lr", "plot-grad-norm", "plot-tokens-per-s", "plot-max-vio"];

    /// <summary>A run folder with <paramref name="steps"/> train records, an eval every <paramref name="evalEvery"/> (0: none), and a train_config.json.</summary>
    internal static string WriteRun(string parent, string name, int steps, int evalEvery, string precision = "fp32", double lossScale = 1,
        Func<int, string?>? lossOverride = null, string samplePrompt = "\n", string sample = "the sample")
    {
        string dir = Path.Combine(parent, name);
        Directory.CreateDirectory(dir);
        using (var w = new StreamWriter(Path.Combine(dir, "metrics.jsonl")))
        {
            for (int s = 1; s <= steps; s++)
            {
                double loss = (2 + 3 * Math.Exp(-s / 40.0)) * lossScale;
                string lossText = lossOverride?.Invoke(s) ?? loss.ToString("R", CultureInfo.InvariantCulture);
                w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $$"""{"kind":"train","step":{{s}},"tokens":{{s * 512}},"loss":{{lossText}},"mtp_loss":{{loss * 1.02}},"lr":{{1e-3 * Math.Min(1, s / 10.0)}},"grad_norm":{{1 + 1.0 / s}},"tokens_per_s":{{3000 + s % 7}},"max_vio":{{1 + 1.0 / s}},"max_vio_per_layer":[{{1.5 / s}},{{2.0 / s}},0.4],"elapsed_s":{{s * 0.3}}}"""));
                if (evalEvery > 0 && s % evalEvery == 0)
                    w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $$"""{"kind":"eval","step":{{s}},"val_loss":{{loss + 0.1}},"val_bpb":{{(loss + 0.1) / Math.Log(2)}},"val_max_vio":{{0.9 + 1.0 / s}},"val_max_vio_per_layer":[1,2,0.5],"expert_load_per_layer":[[10,30,20,20],[5,5,5,45],[0,0,0,0]],"sample":{{JsonSerializer.Serialize(sample)}},"elapsed_s":{{s * 0.3}}}"""));
            }
        }
        File.WriteAllText(Path.Combine(dir, "train_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model_preset"] = "tiny-v3", ["precision"] = precision, ["learning_rate"] = 0.001, ["sample_prompt"] = samplePrompt,
            ["datasets"] = new[] { new { path = "corpus.txt" } },
        }));
        return dir;
    }

    /// <summary>The svg element with the given id, whole.</summary>
    internal static string Svg(string html, string id)
    {
        var m = Regex.Match(html, $"<svg id=\"{Regex.Escape(id)}\".*?</svg>", RegexOptions.Singleline);
        Assert.True(m.Success, $"no <svg id=\"{id}\"> in the report");
        return m.Value;
    }

    internal static List<string> PathData(string svg) => LinePath().Matches(svg).Select(m => m.Groups[1].Value).ToList();

    private static int Points(string d) => d.Count(c => c is 'M' or 'L');

    [GeneratedRegex("<path class=\"line\" d=\"([^\"]*)\"")]
    private static partial Regex LinePath();

    [Fact]
    public void EveryPlotHasItsLinesAxesAndLegend()
    {
        string root = TestPaths.TempDir();
        try
        {
            string run = WriteRun(root, "run-a", 200, 50);
            string path = RunReport.Write(run, []);
            Assert.Equal(Path.Combine(run, "report.html"), path);
            string html = File.ReadAllText(path);
            foreach (string id in LinePlots)
            {
                string svg = Svg(html, id);
                Assert.DoesNotContain("data-empty", svg);
                Assert.Matches("<title id=\"[a-z-]+-title\">[^<]+</title>", svg);
                var lines = PathData(svg);
                Assert.NotEmpty(lines);
                Assert.All(lines, d => Assert.True(Points(d) >= 4, $"{id}: a line with {Points(d)} points"));
                Assert.Contains("class=\"axis x\"", svg);
                Assert.Contains(">step</text>", svg);
                Assert.Contains("class=\"legend\"", svg);
            }
            // Train loss and its MTP line; train and validation MaxVio.
            Assert.Equal(2, PathData(Svg(html, "plot-loss")).Count);
            Assert.Equal(2, PathData(Svg(html, "plot-max-vio")).Count);
            // MaxVio per layer over every logged step: 3 layers × 200 steps, one tooltip each.
            string vio = Svg(html, "heatmap-max-vio-0");
            Assert.Equal(600, Regex.Matches(vio, "<rect x=\"\\d+\" y=\"\\d+\" width=\"\\d+\" height=\"\\d+\" fill=\"#[0-9a-f]{6}\"><title>").Count);
            Assert.Contains("<title>MoE gate 1, step 100: MaxVio 0.02</title>", vio);
            // Expert load at evaluations: 4 panels (steps 50..200) of 3 layers × 4 experts.
            string load = Svg(html, "heatmap-expert-load-0-3");
            Assert.Contains("Expert load at step 200", load);
            Assert.Contains("<title>MoE gate 1, expert 3: load ÷ layer mean 3</title>", load);
            Assert.Contains("<title>MoE gate 2, expert 0: load ÷ layer mean –</title>", load);
            Assert.Contains("<td>learning_rate</td><td>0.001</td>", html);
            Assert.Contains("the sample", html);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void PageLoadsNothingFromOutside()
    {
        string root = TestPaths.TempDir();
        try
        {
            string html = File.ReadAllText(RunReport.Write(WriteRun(root, "run", 30, 10), []));
            Assert.Contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">", html);
            foreach (string reference in new[] { "src=", "href=", "url(", "@import", "http:", "https:", "<link", "<img", "<iframe" })
                Assert.DoesNotContain(reference, html, StringComparison.OrdinalIgnoreCase);
            Assert.Single(Regex.Matches(html, "<script"));
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void RunWithoutEvalRecordsShowsTheOtherPlots()
    {
        string root = TestPaths.TempDir();
        try
        {
            string html = File.ReadAllText(RunReport.Write(WriteRun(root, "no-eval", 40, 0), []));
            foreach (string id in new[] { "plot-val-loss", "plot-val-bpb" })
            {
                string svg = Svg(html, id);
                Assert.Contains("data-empty=\"true\"", svg);
                Assert.Contains("no eval records", svg);
            }
            foreach (string id in new[] { "plot-loss", "plot-lr", "plot-grad-norm", "plot-tokens-per-s", "plot-max-vio", "heatmap-max-vio-0" })
                Assert.DoesNotContain("data-empty", Svg(html, id));
            Assert.DoesNotContain("heatmap-expert-load", html);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void NonFiniteAndNullValuesAreGapsInTheLine()
    {
        string root = TestPaths.TempDir();
        try
        {
            // null at step 10, "NaN" at 20, "Infinity" at 21: the loss line breaks twice.
            string run = WriteRun(root, "gappy", 40, 0, lossOverride: s => s switch { 10 => "null", 20 => "\"NaN\"", 21 => "\"Infinity\"", _ => null });
            string html = File.ReadAllText(RunReport.Write(run, []));
            string loss = PathData(Svg(html, "plot-loss"))[0];
            Assert.Equal(3, loss.Count(c => c == 'M'));
            Assert.Equal(40 - 3, Points(loss));
            Assert.DoesNotContain("NaN", loss);
            Assert.DoesNotContain("Infinity", loss);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void ThousandsOfRecordsAreThinnedForDrawing()
    {
        string root = TestPaths.TempDir();
        try
        {
            string run = WriteRun(root, "long", 20_000, 100);
            string html = File.ReadAllText(RunReport.Write(run, []));
            Assert.InRange(html.Length, 10_000, 1_000_000);
            foreach (string id in LinePlots)
                Assert.All(PathData(Svg(html, id)), d => Assert.InRange(Points(d), 2, LineChart.MaxPointsPerSeries));
            // The heatmap keeps the last step and stays within its cell budget.
            string vio = Svg(html, "heatmap-max-vio-0");
            Assert.InRange(Regex.Matches(vio, "<title>MoE gate").Count, 3 * 100, Heatmap.DefaultMaxCells);
            Assert.Contains("<title>MoE gate 0, step 20000: MaxVio", vio);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void HostileNamesConfigAndSamplesAreEscaped()
    {
        string root = TestPaths.TempDir();
        try
        {
            const string Markup = "<img src=x onerror=alert(1)>\"'&";
            string run = WriteRun(root, "run" + Markup, 20, 10, samplePrompt: "</script><script>alert(2)</script>", sample: "<b>bold</b>\u0000</pre>");
            string html = File.ReadAllText(RunReport.Write(run, []));
            Assert.DoesNotContain("<img", html);
            Assert.DoesNotContain("<b>", html);
            Assert.DoesNotContain("alert(2)</script>", html);
            Assert.Single(Regex.Matches(html, "<script"));
            Assert.Single(Regex.Matches(html, "</script>"));
            Assert.Contains("run&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;", html);
            Assert.Contains("&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;", html);
            Assert.Contains("&lt;b&gt;bold&lt;/b&gt;\uFFFD&lt;/pre&gt;", html);
            Assert.DoesNotContain("\u0000", html);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void ComparedRunsGetOneColourEachAndTheirDifferenceToTheBaseline()
    {
        string root = TestPaths.TempDir();
        try
        {
            string baseline = WriteRun(root, "fp32-run", 60, 20);
            string fp8 = WriteRun(root, "fp8-run", 60, 20, precision: "fp8", lossScale: 0.99);
            string outPath = Path.Combine(root, "compare.html");
            Assert.Equal(outPath, RunReport.Write(baseline, [fp8], outPath));
            string html = File.ReadAllText(outPath);
            var colours = Regex.Matches(Svg(html, "plot-val-loss"), "<path class=\"line\" d=\"[^\"]*\" stroke=\"(#[0-9a-f]{6})\"").Select(m => m.Groups[1].Value).ToList();
            Assert.Equal(2, colours.Distinct().Count());
            Assert.Contains("fp8-run (fp8)", html);
            string vs = Svg(html, "plot-vs-baseline");
            Assert.Contains("FP8 vs baseline", vs);
            // The fp8 run's loss is 0.99 × the baseline's at every step: −1 % throughout.
            var trainDiff = Regex.Match(vs, "data-label=\"fp8-run \\(fp8\\) · train\" data-x=\"[^\"]*\" data-y=\"([^\"]*)\"").Groups[1].Value.Split(' ');
            Assert.Equal(60, trainDiff.Length);
            Assert.All(trainDiff, v => Assert.Equal(-1.0, double.Parse(v, CultureInfo.InvariantCulture), 3));
            Assert.Contains("<tr class=\"differs\"><td>precision</td><td>fp32</td><td>fp8</td></tr>", html);
            Assert.Contains("<tr><td>learning_rate</td><td>0.001</td><td>0.001</td></tr>", html);
            Assert.False(File.Exists(Path.Combine(baseline, "report.html")), "--out must be the only file written");
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void BadFoldersAreOneLineErrors()
    {
        string root = TestPaths.TempDir();
        try
        {
            string missing = Path.Combine(root, "missing");
            DssProcess.AssertCleanError(DssProcess.Run("report", missing), $"{missing}: run folder not found");
            string empty = Path.Combine(root, "empty");
            Directory.CreateDirectory(empty);
            DssProcess.AssertCleanError(DssProcess.Run("report", empty), Path.Combine(empty, "metrics.jsonl") + ": not found");
            string run = WriteRun(root, "run", 5, 0);
            DssProcess.AssertCleanError(DssProcess.Run("report", run, "--compare", missing), $"{missing}: run folder not found");
            string badOut = Path.Combine(root, "nowhere", "r.html");
            DssProcess.AssertCleanError(DssProcess.Run("report", run, "--out", badOut), $"{badOut}: output folder does not exist");
            Assert.Equal(["empty", "run"], Directory.GetDirectories(root).Select(Path.GetFileName).Order());
        }
        finally { Directory.Delete(root, true); }
    }
}
