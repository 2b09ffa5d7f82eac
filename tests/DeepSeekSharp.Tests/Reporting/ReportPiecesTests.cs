using System.Globalization;
using System.Text.RegularExpressions;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Reporting;

namespace DeepSeekSharp.Tests.Reporting;

/// <summary>The run report's parts without a browser: escaping, path data, downsampling, axes, metrics reading.</summary>
public class ReportPiecesTests
{
    [Fact]
    public void EscapingNeutralisesMarkupQuotesAndInvalidCharacters()
    {
        string hostile = "<script>alert('x')</script>&\"\u0000\u0007\ud800ok\U0001F600\n\t\u202E";
        Assert.Equal("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\uFFFD\uFFFD\uFFFDok\U0001F600\n\t\u202E", Html.Escape(hostile));
        Assert.Equal("", Html.Escape(null));
    }

    [Fact]
    public void PathDataStartsANewSegmentAfterEachGap()
    {
        Assert.Equal("M0 5L10 6M30 7L40 8.5", LineChart.PathData([0, 10, 20, 30, 40], [5, 6, double.NaN, 7, 8.46]));
        // A point alone between gaps is drawn as a dot (a zero-length segment with round caps).
        Assert.Equal("M0 1h0M20 3h0", LineChart.PathData([0, 10, 20], [1, double.NaN, 3]));
        Assert.Equal("M0 1L20 3", LineChart.PathData([0, 20], [1, 3]));
        Assert.Equal("M10 2", LineChart.PathData([double.PositiveInfinity, 10, double.NaN], [1, 2, 3])[..5]);
        Assert.Equal("", LineChart.PathData([], []));
    }

    [Fact]
    public void DownsamplingBoundsThePointsAndKeepsExtremesEndsAndGaps()
    {
        const int N = 10_000;
        var x = new double[N];
        var y = new double[N];
        for (int i = 0; i < N; i++) { x[i] = i + 1; y[i] = Math.Sin(i / 50.0); }
        y[4321] = 100;
        y[7000] = -50;
        for (int i = 5000; i < 5100; i++) y[i] = double.NaN;
        y[6000] = double.PositiveInfinity;

        var (dx, dy) = Downsampler.MinMax(x, y, 300);
        Assert.InRange(dx.Length, 100, 300);
        Assert.Equal(dx.Length, dy.Length);
        Assert.Contains(100.0, dy);
        Assert.Contains(-50.0, dy);
        Assert.Equal(1, dx[0]);
        Assert.Equal(N, dx[^1]);
        Assert.True(double.IsFinite(dy[0]) && double.IsFinite(dy[^1]));
        for (int i = 1; i < dx.Length; i++) Assert.True(dx[i] > dx[i - 1], "steps must stay in order");
        // The NaN run and the ∞ each leave one gap between finite points, never two in a row.
        int gaps = dy.Count(double.IsNaN);
        Assert.Equal(2, gaps);
        for (int i = 1; i < dy.Length; i++) Assert.False(double.IsNaN(dy[i]) && double.IsNaN(dy[i - 1]));
        Assert.DoesNotContain(dy, double.IsInfinity);
    }

    [Fact]
    public void ShortSeriesAreKeptWithRunsOfMissingValuesCollapsedToOneGap()
    {
        var (x, y) = Downsampler.MinMax([1, 2, 3, 4, 5, 6], [double.NaN, 1, double.NaN, double.NaN, 2, double.NaN], 600);
        Assert.Equal([2.0, 3, 5], x);
        Assert.Equal(1, y[0]);
        Assert.True(double.IsNaN(y[1]));
        Assert.Equal(2, y[2]);
    }

    [Fact]
    public void AxesAreRoundAndCoverTheData()
    {
        var a = Axis.Nice(0.13, 4.87);
        Assert.Equal((0.0, 5.0, 1.0), (a.Min, a.Max, a.Step));
        Assert.Equal([0.0, 1, 2, 3, 4, 5], a.Ticks());
        var lr = Axis.Nice(2e-4, 3e-3);
        Assert.Equal(5e-4, lr.Step, 12);
        Assert.True(lr.Min <= 2e-4 && lr.Max >= 3e-3);
        var flat = Axis.Nice(3, 3);
        Assert.True(flat.Min < 3 && flat.Max > 3);
        var steps = Axis.Nice(10, 150, 6);
        Assert.Equal((0.0, 160.0, 20.0), (steps.Min, steps.Max, steps.Step));
        Assert.Equal(25, Axis.Nice(0, 100).Scale(50, 0, 50));
    }

    [Fact]
    public void ExtremeValuesStayInsideThePlotAsNumbers()
    {
        string svg = LineChart.Render(new LineChartSpec("p", "t", "y",
            [new ChartSeries("a", "#000000", [1, 2, 3, 4, 5], [1e308, -1e308, double.Epsilon, 0, double.MaxValue])], "none"));
        Assert.DoesNotContain("data-empty", svg);
        Assert.DoesNotMatch(" (x|y|x1|x2|y1|y2|cx|cy|d)=\"[^\"]*(NaN|Infinity|E)", svg);
        var ys = Regex.Matches(svg, "<circle class=\"marker\" cx=\"[0-9.]+\" cy=\"([0-9.]+)\"").Select(m => double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(5, ys.Count);
        Assert.All(ys, y => Assert.InRange(y, 0, LineChart.Height));
    }

    [Fact]
    public void ValuesInTooltipsAndTablesKeepWholeNumbersExact()
    {
        Assert.Equal("1234567", Html.Value(1234567));
        Assert.Equal("2.64185", Html.Value(2.641851234));
        Assert.Equal("1.5E-07", Html.Value(1.5e-7));
        Assert.Equal("–", Html.Value(double.NaN));
    }

    [Fact]
    public void TickLabelsCarryEnoughDecimalsAndNoMore()
    {
        Assert.Equal("2.5", Html.Tick(2.5, 0.5));
        Assert.Equal("3", Html.Tick(3, 1));
        Assert.Equal("0.0015", Html.Tick(0.0015, 0.0005));
        Assert.Equal("12k", Html.Tick(12000, 2000));
        Assert.Equal("0", Html.Tick(1e-19, 0.5));
        Assert.Equal("5e-5", Html.Tick(5e-5, 5e-5));
    }

    [Fact]
    public void MetricsReaderSkipsBrokenLinesReadsNonFiniteAsGapsAndKeepsTheLastRecordOfAStep()
    {
        string dir = TestPaths.TempDir();
        try
        {
            string path = Path.Combine(dir, "metrics.jsonl");
            File.WriteAllLines(path,
            [
                """{"kind":"train","step":1,"loss":2.0,"grad_norm":1}""",
                """{"kind":"train","step":2,"loss":null}""",
                """{"kind":"train","step":3,"loss":"NaN","grad_norm":"Infinity","max_vio_per_layer":[0.5,null,"NaN"]}""",
                """{"kind":"eval","step":3,"val_loss":1.9,"expert_load_per_layer":[[1,2],[3,4]],"sample":"<b>hi</b>"}""",
                """[1,2]""",
                """{"kind":"train","step":"x","loss":1}""",
                """{"kind":"train","step":-1,"loss":1}""",
                "",
                """{"kind":"train","step":2,"loss":1.5}""",
                """{"kind":"train","step":4,"lo""",
            ]);
            var m = MetricsFile.Read(path);
            Assert.Equal(4, m.SkippedLines);
            Assert.Equal([1L, 2, 3], m.Train.Select(r => r.Step));
            Assert.Equal(1.5, m.Train[1].Scalars["loss"]); // the resumed run's record replaced the first one
            Assert.True(double.IsNaN(m.Train[2].Scalars["loss"]));
            Assert.True(double.IsPositiveInfinity(m.Train[2].Scalars["grad_norm"]));
            var vio = m.Train[2].Vectors["max_vio_per_layer"];
            Assert.Equal(0.5, vio[0]);
            Assert.True(double.IsNaN(vio[1]) && double.IsNaN(vio[2]));
            var eval = Assert.Single(m.Eval);
            Assert.Equal([3.0, 4], eval.Matrices["expert_load_per_layer"][1]);
            Assert.Equal("<b>hi</b>", eval.Texts["sample"]);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void HeatmapDrawsEveryColumnWithinItsBudgetAndEvenlySpacedOnesBeyond()
    {
        Assert.Equal(Enumerable.Range(0, 10), Heatmap.ColumnsToDraw(10, 4, 12_000));
        var thinned = Heatmap.ColumnsToDraw(1000, 100, 12_000);
        Assert.Equal(120, thinned.Length);
        Assert.Equal(999, thinned[^1]);
        for (int i = 1; i < thinned.Length; i++) Assert.InRange(thinned[i] - thinned[i - 1], 8, 9);
    }

    [Fact]
    public void HeatmapCellsCarryTooltipsAndScaleColours()
    {
        var values = new double[,] { { 0, 1 }, { 2, double.NaN } };
        string svg = Heatmap.Render(new HeatmapSpec("h", "T", ["layer 1", "layer <2>"], "step", ["10", "20"], values, new ColourScale(0, 2), "MaxVio"));
        Assert.Equal(4 + 16, svg.Split("<rect").Length - 1); // 4 cells and the 16-step colour bar
        Assert.Contains("<title>layer &lt;2&gt;, step 10: MaxVio 2</title>", svg);
        Assert.Contains("<title>layer &lt;2&gt;, step 20: MaxVio –</title>", svg);
        Assert.Equal("#440154", new ColourScale(0, 2).Colour(0));
        Assert.Equal("#fde725", new ColourScale(0, 2).Colour(5));
        Assert.Equal("#f7f7f7", new ColourScale(0, 4, Centre: 1).Colour(1));
        Assert.Equal("#d9d9d9", new ColourScale(0, 2).Colour(double.NaN));
    }

    [Fact]
    public void ExpertLoadIsEachCountOverItsLayerMean()
    {
        var shares = ReportSections.LoadShares([[1, 3], [0, 0]], 3, 2);
        Assert.Equal(0.5, shares[0, 0]);
        Assert.Equal(1.5, shares[0, 1]);
        Assert.True(double.IsNaN(shares[1, 0]) && double.IsNaN(shares[2, 1]));
    }

    [Fact]
    public void RelativeDifferenceUsesTheStepsBothRunsRecorded()
    {
        var run = new Series([1, 2, 3, 4], [0.99, 2.2, 5, double.NaN]);
        var baseline = new Series([1, 2, 4, 5], [1, 2, 1, 1]);
        var d = ReportSections.RelativePercent(run, baseline);
        Assert.Equal([1.0, 2, 4], d.Steps);
        Assert.Equal(-1, d.Values[0], 9);
        Assert.Equal(10, d.Values[1], 9);
        Assert.True(double.IsNaN(d.Values[2]));
    }

    [Fact]
    public void GateNamesFollowTheModelConfigAndFallBackToNumbers()
    {
        var config = DeepSeekConfig.Parse(Presets.All["tiny-v3"]);
        Assert.Equal(["layer 1", "layer 2", "layer 3", "MTP 1"], RunHistory.GateNamesFrom(config, 4));
        Assert.Equal(["layer 1", "layer 2", "layer 3"], RunHistory.GateNamesFrom(config, 3)); // validation: no MTP block
        Assert.Equal(["MoE gate 0", "MoE gate 1"], RunHistory.GateNamesFrom(config, 2));
    }

    [Fact]
    public void LabelsComeFromFolderNamesAndStayDistinct()
    {
        Assert.Equal(["run", "other"], RunReport.Labels(["/x/a/run", "/x/b/other/"]));
        Assert.Equal(["a/run", "b/run", "other"], RunReport.Labels(["/x/a/run", "/x/b/run", "/x/c/other"]));
        Assert.Equal(["a/run", "a/run (2)"], RunReport.Labels(["/x/a/run", "/x/a/run/"]));
    }
}
