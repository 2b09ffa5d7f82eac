using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Reporting;

/// <summary>The report page's sections, in page order. Every run-provided string is escaped where it is written.</summary>
internal static class ReportSections
{
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

    /// <summary>Expert-load panels per run: at most this many evaluations, and this many cells over all of them.</summary>
    private const int MaxLoadPanels = 6, MaxLoadCells = 20_000;

    private static string Colour(int run) => Palette[run % Palette.Length];

    private static string Legend(RunHistory run, IReadOnlyList<RunHistory> runs) => runs.Count > 1 ? $"{run.Label} ({run.Precision})" : run.Label;

    public static void Summary(StringBuilder sb, IReadOnlyList<RunHistory> runs)
    {
        sb.Append("<section id=\"summary\"><h2>Summary</h2><table><tr><th>run</th><th>folder</th><th>precision</th><th>last step</th>")
          .Append("<th>final train loss</th><th>best val loss (step)</th><th>final val bits/byte</th><th>median tokens/s</th><th>elapsed s</th><th>records (train / eval)</th></tr>\n");
        foreach (var run in runs)
        {
            var valLoss = run.Eval("val_loss");
            int best = Enumerable.Range(0, valLoss.Values.Length).Where(i => double.IsFinite(valLoss.Values[i]))
                .DefaultIfEmpty(-1).MinBy(i => i < 0 ? 0 : valLoss.Values[i]);
            string bestText = best < 0 ? "–" : $"{Html.Value(valLoss.Values[best])} ({Html.Value(valLoss.Steps[best])})";
            long lastStep = Math.Max(run.Metrics.Train.Count > 0 ? run.Metrics.Train[^1].Step : 0, run.Metrics.Eval.Count > 0 ? run.Metrics.Eval[^1].Step : 0);
            double elapsed = Math.Max(run.Train("elapsed_s").LastFinite(), run.Eval("elapsed_s").LastFinite());
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{Html.Escape(run.Label)}</td><td>{Html.Escape(run.Folder)}</td><td>{Html.Escape(run.Precision)}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{lastStep}</td><td class=\"num\">{Html.Value(run.Train("loss").LastFinite())}</td><td class=\"num\">{bestText}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{Html.Value(run.Eval("val_bpb").LastFinite())}</td><td class=\"num\">{Html.Value(Median(run.Train("tokens_per_s")))}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{Html.Value(elapsed)}</td><td class=\"num\">{run.Metrics.Train.Count} / {run.Metrics.Eval.Count}</td></tr>\n");
        }
        sb.Append("</table>");
        foreach (var run in runs)
        {
            if (run.Metrics.SkippedLines > 0)
                sb.Append(CultureInfo.InvariantCulture, $"<p class=\"note\">{Html.Escape(run.Label)}: {run.Metrics.SkippedLines} unreadable line(s) of metrics.jsonl skipped.</p>");
            if (run.Metrics.Train.Count + run.Metrics.Eval.Count == 0)
                sb.Append(CultureInfo.InvariantCulture, $"<p class=\"note\">{Html.Escape(run.Label)}: metrics.jsonl has no records yet.</p>");
        }
        sb.Append("</section>\n");
    }

    public static void Charts(StringBuilder sb, IReadOnlyList<RunHistory> runs)
    {
        ChartSeries Line(int i, Series s, string suffix = "", bool dashed = false) =>
            new(Legend(runs[i], runs) + suffix, Colour(i), s.Steps, s.Values, dashed);
        IEnumerable<ChartSeries> Each(Func<int, RunHistory, IEnumerable<ChartSeries>> make) => runs.SelectMany((r, i) => make(i, r));

        var charts = new List<LineChartSpec>
        {
            new("plot-loss", "Training loss", "loss (nats/token)", Each((i, r) =>
            {
                var main = Line(i, r.Train("loss"));
                var mtp = r.Train("mtp_loss");
                // Runs without MTP write mtp_loss 0: no second line then.
                return mtp.Values.Any(v => double.IsFinite(v) && v != 0) ? [main, Line(i, mtp, " · MTP", dashed: true)] : [main];
            }).ToList(), "no train records"),
            new("plot-val-loss", "Validation loss", "loss (nats/token)", Each((i, r) => [Line(i, r.Eval("val_loss"))]).ToList(), "no eval records"),
            new("plot-val-bpb", "Validation bits per byte", "bits/byte", Each((i, r) => [Line(i, r.Eval("val_bpb"))]).ToList(), "no eval records"),
            new("plot-lr", "Learning rate", "learning rate", Each((i, r) => [Line(i, r.Train("lr"))]).ToList(), "no train records"),
            new("plot-grad-norm", "Gradient norm (before clipping)", "global L2 norm", Each((i, r) => [Line(i, r.Train("grad_norm"))]).ToList(), "no train records"),
            new("plot-tokens-per-s", "Throughput", "tokens/s", Each((i, r) => [Line(i, r.Train("tokens_per_s"))]).ToList(), "no train records"),
            new("plot-max-vio", "Expert load imbalance (MaxVio, mean over MoE layers)", "MaxVio", Each((i, r) =>
                [Line(i, r.Train("max_vio"), " · train"), Line(i, r.Eval("val_max_vio"), " · validation", dashed: true)]).ToList(),
                "no MoE load recorded (a dense model?)"),
        };
        sb.Append("<section id=\"charts\"><h2>Training curves</h2><div class=\"charts\">\n");
        foreach (var chart in charts) sb.Append(LineChart.Render(chart)).Append('\n');
        sb.Append("</div></section>\n");
    }

    /// <summary>Each compared run's loss relative to the first run at the steps both recorded, in percent.</summary>
    public static void AgainstBaseline(StringBuilder sb, IReadOnlyList<RunHistory> runs)
    {
        var baseline = runs[0];
        bool fp8VsOther = baseline.Precision != "fp8" && runs.Skip(1).Any(r => r.Precision == "fp8");
        string title = (fp8VsOther ? "FP8 vs baseline: " : "") + $"loss relative to {baseline.Label} ({baseline.Precision})";
        var series = new List<ChartSeries>();
        for (int i = 1; i < runs.Count; i++)
        {
            var train = RelativePercent(runs[i].Train("loss"), baseline.Train("loss"));
            var val = RelativePercent(runs[i].Eval("val_loss"), baseline.Eval("val_loss"));
            series.Add(new ChartSeries(Legend(runs[i], runs) + " · train", Colour(i), train.Steps, train.Values));
            series.Add(new ChartSeries(Legend(runs[i], runs) + " · validation", Colour(i), val.Steps, val.Values, Dashed: true));
        }
        sb.Append(CultureInfo.InvariantCulture, $"<section id=\"vs-baseline\"><h2>{Html.Escape(fp8VsOther ? "FP8 vs baseline" : "Against the baseline")}</h2>");
        sb.Append(CultureInfo.InvariantCulture, $"<p class=\"note\">(run − {Html.Escape(baseline.Label)}) / {Html.Escape(baseline.Label)} × 100 at the steps both runs recorded; below 0 is better than the baseline.</p>");
        sb.Append("<div class=\"charts\">");
        sb.Append(LineChart.Render(new LineChartSpec("plot-vs-baseline", title, "difference (%)", series, "no steps in common with the baseline", ReferenceY: 0)));
        sb.Append("</div><table><tr><th>run</th><th>precision</th><th>final train loss</th><th>vs baseline</th><th>final val loss</th><th>vs baseline</th><th>median tokens/s</th><th>vs baseline</th></tr>\n");
        foreach (var run in runs)
        {
            var train = RelativePercent(run.Train("loss"), baseline.Train("loss"));
            var val = RelativePercent(run.Eval("val_loss"), baseline.Eval("val_loss"));
            double speed = Median(run.Train("tokens_per_s")), baseSpeed = Median(baseline.Train("tokens_per_s"));
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{Html.Escape(run.Label)}</td><td>{Html.Escape(run.Precision)}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{Html.Value(run.Train("loss").LastFinite())}</td><td class=\"num\">{Percent(train.LastFinite())}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{Html.Value(run.Eval("val_loss").LastFinite())}</td><td class=\"num\">{Percent(val.LastFinite())}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{Html.Value(speed)}</td><td class=\"num\">{(baseSpeed > 0 ? Html.Value(Math.Round(speed / baseSpeed, 3)) + "×" : "–")}</td></tr>\n");
        }
        sb.Append("</table></section>\n");
    }

    /// <summary>Per run: MaxVio of every MoE layer over training steps, and each expert's load at a few evaluations.</summary>
    public static void ExpertLoad(StringBuilder sb, IReadOnlyList<RunHistory> runs)
    {
        sb.Append("<section id=\"expert-load\"><h2>Expert load per MoE layer</h2>");
        sb.Append("<p class=\"note\">MaxVio = (max load − mean load) / mean load over a layer's routed experts (0 is perfect balance). " +
                  "Expert load is the tokens routed to the expert during the evaluation, divided by the layer's mean (1 = average). Hover a cell for its values.</p>\n");
        for (int i = 0; i < runs.Count; i++)
        {
            var run = runs[i];
            sb.Append(CultureInfo.InvariantCulture, $"<h3>{Html.Escape(run.Label)}</h3><div class=\"heatmaps\">");
            // Train records carry MaxVio per layer at every logging step; older runs only at evaluations.
            var (records, key, source) = run.Metrics.Train.Any(r => r.Vectors.ContainsKey("max_vio_per_layer"))
                ? (run.Metrics.Train, "max_vio_per_layer", "training steps")
                : (run.Metrics.Eval, "val_max_vio_per_layer", "evaluations");
            var withVio = records.Where(r => r.Vectors.TryGetValue(key, out var v) && v.Length > 0).ToList();
            if (withVio.Count == 0)
                sb.Append("<p class=\"note\">No per-layer expert load recorded (a dense model, or no logging or evaluation step yet).</p>");
            else
                sb.Append(Heatmap.Render(MaxVioHeatmap($"heatmap-max-vio-{i}", $"MaxVio per MoE layer over {source}", run, withVio, key)));
            foreach (var panel in LoadHeatmaps(i, run)) sb.Append(Heatmap.Render(panel));
            sb.Append("</div>\n");
        }
        sb.Append("</section>\n");
    }

    private static HeatmapSpec MaxVioHeatmap(string id, string title, RunHistory run, List<MetricsRecord> records, string key)
    {
        int gates = records.Max(r => r.Vectors[key].Length);
        var values = new double[gates, records.Count];
        double max = 0;
        for (int c = 0; c < records.Count; c++)
        {
            var v = records[c].Vectors[key];
            for (int g = 0; g < gates; g++)
            {
                values[g, c] = g < v.Length ? v[g] : double.NaN;
                if (double.IsFinite(values[g, c])) max = Math.Max(max, values[g, c]);
            }
        }
        var steps = records.Select(r => r.Step.ToString(CultureInfo.InvariantCulture)).ToList();
        return new HeatmapSpec(id, title, run.GateNames(gates), "step", steps, values, new ColourScale(0, max > 0 ? max : 1), "MaxVio");
    }

    private static IEnumerable<HeatmapSpec> LoadHeatmaps(int runIndex, RunHistory run)
    {
        var evals = run.Metrics.Eval.Where(r => r.Matrices.ContainsKey("expert_load_per_layer") && r.Matrices["expert_load_per_layer"].Length > 0).ToList();
        if (evals.Count == 0) yield break;
        int gates = evals.Max(r => r.Matrices["expert_load_per_layer"].Length);
        int experts = evals.Max(r => r.Matrices["expert_load_per_layer"].Max(row => row.Length));
        if (experts == 0) yield break;
        int panels = Math.Clamp(MaxLoadCells / Math.Max(1, gates * experts), 1, MaxLoadPanels);
        // Evenly spaced evaluations, always including the last.
        var chosen = Enumerable.Range(0, Math.Min(panels, evals.Count))
            .Select(k => evals[(int)((long)(evals.Count - 1) * (k + 1) / Math.Min(panels, evals.Count))]).Distinct().ToList();
        var shares = chosen.Select(r => LoadShares(r.Matrices["expert_load_per_layer"], gates, experts)).ToList();
        double max = shares.SelectMany(s => s.Cast<double>()).Where(double.IsFinite).DefaultIfEmpty(2).Max();
        var scale = new ColourScale(0, Math.Max(2, max), Centre: 1);
        var expertLabels = Enumerable.Range(0, experts).Select(e => e.ToString(CultureInfo.InvariantCulture)).ToList();
        for (int k = 0; k < chosen.Count; k++)
            yield return new HeatmapSpec($"heatmap-expert-load-{runIndex}-{k}", $"Expert load at step {chosen[k].Step}", run.GateNames(gates),
                "expert", expertLabels, shares[k], scale, "load ÷ layer mean", MaxCells: MaxLoadCells);
    }

    /// <summary>Each expert's count divided by its layer's mean count; NaN where a layer routed nothing.</summary>
    internal static double[,] LoadShares(double[][] counts, int gates, int experts)
    {
        var shares = new double[gates, experts];
        for (int g = 0; g < gates; g++)
        {
            var row = g < counts.Length ? counts[g] : [];
            double mean = row.Length > 0 ? row.Where(double.IsFinite).DefaultIfEmpty(0).Sum() / row.Length : 0;
            for (int e = 0; e < experts; e++)
                shares[g, e] = e < row.Length && mean > 0 && double.IsFinite(row[e]) ? row[e] / mean : double.NaN;
        }
        return shares;
    }

    public static void Config(StringBuilder sb, IReadOnlyList<RunHistory> runs)
    {
        sb.Append("<section id=\"config\"><h2>Config</h2>");
        foreach (var run in runs)
            if (run.TrainConfigNote is not null)
                sb.Append(CultureInfo.InvariantCulture, $"<p class=\"note\">{Html.Escape(run.Label)}: {Html.Escape(run.TrainConfigNote)}</p>");
        var keys = runs.Where(r => r.TrainConfig is not null).SelectMany(r => r.TrainConfig!.Select(kv => kv.Key)).Distinct().ToList();
        if (keys.Count > 0)
        {
            sb.Append("<table id=\"train-config\"><tr><th>key</th>");
            foreach (var run in runs) sb.Append(CultureInfo.InvariantCulture, $"<th>{Html.Escape(run.Label)}</th>");
            sb.Append("</tr>\n");
            foreach (string key in keys)
            {
                var values = runs.Select(r => r.TrainConfig is null ? null : r.Config(key)).ToList();
                bool differs = runs.Count > 1 && values.Distinct().Count() > 1;
                sb.Append(differs ? "<tr class=\"differs\">" : "<tr>").Append(CultureInfo.InvariantCulture, $"<td>{Html.Escape(key)}</td>");
                foreach (var v in values) sb.Append(CultureInfo.InvariantCulture, $"<td>{(v is null ? "–" : Html.Escape(v))}</td>");
                sb.Append("</tr>\n");
            }
            sb.Append("</table>");
            if (runs.Count > 1) sb.Append("<p class=\"note\">Highlighted rows differ between runs.</p>");
        }
        foreach (var run in runs)
            if (run.ModelConfig is { } mc)
                sb.Append(CultureInfo.InvariantCulture, $"<details><summary>model config of {Html.Escape(run.Label)} ({Html.Escape(mc.Path)})</summary><pre>{Html.Escape(mc.Json)}</pre></details>\n");
        sb.Append("</section>\n");
    }

    public static void Samples(StringBuilder sb, IReadOnlyList<RunHistory> runs)
    {
        var samples = runs.Select(r => (Run: r, Record: r.Metrics.Eval.LastOrDefault(e => e.Texts.ContainsKey("sample")))).Where(s => s.Record is not null).ToList();
        if (samples.Count == 0) return;
        sb.Append("<section id=\"samples\"><h2>Last sample</h2>");
        foreach (var (run, record) in samples)
            sb.Append(CultureInfo.InvariantCulture, $"<h3>{Html.Escape(run.Label)} at step {record!.Step}</h3><pre>{Html.Escape(record.Texts["sample"])}</pre>");
        sb.Append("</section>\n");
    }

    /// <summary>(run − baseline) / baseline × 100 at the steps both have finite values.</summary>
    internal static Series RelativePercent(Series run, Series baseline)
    {
        var baseByStep = new Dictionary<double, double>();
        for (int i = 0; i < baseline.Steps.Length; i++) baseByStep[baseline.Steps[i]] = baseline.Values[i];
        var steps = new List<double>();
        var values = new List<double>();
        for (int i = 0; i < run.Steps.Length; i++)
        {
            if (!baseByStep.TryGetValue(run.Steps[i], out double b)) continue;
            steps.Add(run.Steps[i]);
            values.Add(b != 0 && double.IsFinite(b) && double.IsFinite(run.Values[i]) ? (run.Values[i] - b) / Math.Abs(b) * 100 : double.NaN);
        }
        return new Series(steps.ToArray(), values.ToArray());
    }

    private static string Percent(double v) => double.IsFinite(v) ? v.ToString("+0.00;−0.00;0.00", CultureInfo.InvariantCulture) + " %" : "–";

    private static double Median(Series s)
    {
        var finite = s.Values.Where(double.IsFinite).Order().ToList();
        return finite.Count == 0 ? double.NaN : finite.Count % 2 == 1 ? finite[finite.Count / 2] : (finite[finite.Count / 2 - 1] + finite[finite.Count / 2]) / 2;
    }
}
