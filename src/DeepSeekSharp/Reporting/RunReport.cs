using System.Globalization;
using System.Text;
using DeepSeekSharp.IO;

namespace DeepSeekSharp.Reporting;

/// <summary>
/// <c>dss report</c>: one self-contained HTML page per run (or runs compared with the first): loss, validation loss
/// and bits per byte, learning rate, gradient norm, tokens/s, MaxVio, per-layer expert load over steps, the
/// comparison with the baseline, the config and the last sample. Plots are inline SVG drawn here; the page loads
/// nothing (its Content-Security-Policy forbids it) and shows everything without script.
/// </summary>
public static class RunReport
{
    /// <summary>The report's name in a run folder.</summary>
    public const string FileName = "report.html";

    /// <summary>
    /// Writes the report of <paramref name="runDir"/>, with <paramref name="compareDirs"/> overlaid (the first run is
    /// the baseline), to <paramref name="outPath"/> (default <c>runDir/report.html</c>) atomically; returns the path.
    /// </summary>
    public static string Write(string runDir, IReadOnlyList<string> compareDirs, string? outPath = null)
    {
        var folders = new List<string> { runDir };
        folders.AddRange(compareDirs);
        var labels = Labels(folders);
        var runs = folders.Select((folder, i) => RunHistory.Load(folder, labels[i])).ToList();
        string path = outPath ?? Path.Combine(runDir, FileName);
        string? outFolder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (outFolder is null || !Directory.Exists(outFolder)) throw new DeepSeekSharpException($"{path}: output folder does not exist");
        if (Directory.Exists(path)) throw new DeepSeekSharpException($"{path}: is a folder, not a file");
        AtomicFile.WriteAllText(path, Render(runs, DateTime.UtcNow));
        return path;
    }

    /// <summary>
    /// The end of a training run: writes <c>outputDir/report.html</c>. A report is a convenience, so any failure is
    /// logged as a warning and never fails the run.
    /// </summary>
    public static void WriteAfterTraining(string outputDir, Action<string> log)
    {
        try
        {
            // A run that stopped before its first record (bad data, say) has nothing to draw.
            if (!File.Exists(Path.Combine(outputDir, "metrics.jsonl"))) return;
            log($"wrote {Write(outputDir, [])}");
        }
        catch (Exception e) // whatever went wrong with the report, the run itself succeeded or failed on its own
        {
            log($"warning: run report not written: {e.Message.ReplaceLineEndings(" ")}");
        }
    }

    /// <summary>Labels from folder names; folders with the same name are told apart by their parent.</summary>
    internal static List<string> Labels(IReadOnlyList<string> folders)
    {
        static string Name(string path, int parents)
        {
            var parts = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar).Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
            return parts.Length == 0 ? "/" : string.Join('/', parts.Skip(Math.Max(0, parts.Length - 1 - parents)));
        }
        var labels = folders.Select(f => Name(f, 0)).ToList();
        var clashing = labels.GroupBy(l => l).Where(g => g.Count() > 1).Select(g => g.Key).ToHashSet();
        for (int i = 0; i < labels.Count; i++)
            if (clashing.Contains(labels[i])) labels[i] = Name(folders[i], 1);
        var seen = new Dictionary<string, int>();
        for (int i = 0; i < labels.Count; i++)
        {
            seen[labels[i]] = seen.GetValueOrDefault(labels[i]) + 1;
            if (seen[labels[i]] > 1) labels[i] += $" ({seen[labels[i]]})";
        }
        return labels;
    }

    internal static string Render(IReadOnlyList<RunHistory> runs, DateTime generatedUtc)
    {
        var sb = new StringBuilder(64 * 1024);
        string title = "Run report: " + string.Join(" vs ", runs.Select(r => r.Label));
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        // The page is self-contained: nothing may be fetched, whatever ends up in it.
        sb.Append("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n");
        sb.Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        sb.Append(CultureInfo.InvariantCulture, $"<title>{Html.Escape(title)}</title>\n<style>{Css}</style>\n</head>\n<body>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<header><h1>{Html.Escape(title)}</h1><p class=\"meta\">generated {generatedUtc:yyyy-MM-dd HH:mm} UTC by dss report");
        if (runs.Count > 1) sb.Append(CultureInfo.InvariantCulture, $"; baseline: {Html.Escape(runs[0].Label)}");
        sb.Append("</p></header>\n");
        ReportSections.Summary(sb, runs);
        ReportSections.Charts(sb, runs);
        if (runs.Count > 1) ReportSections.AgainstBaseline(sb, runs);
        ReportSections.ExpertLoad(sb, runs);
        ReportSections.Config(sb, runs);
        ReportSections.Samples(sb, runs);
        sb.Append(CultureInfo.InvariantCulture, $"<script>{Script}</script>\n</body>\n</html>\n");
        return sb.ToString();
    }

    private const string Css = """
        body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1800px; }
        h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; } h3 { font-size: 15px; margin: 16px 0 6px; }
        .meta, .note { color: #666; }
        table { border-collapse: collapse; margin: 6px 0; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
        th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
        tr.differs td { background: #fff6d6; }
        .charts { display: flex; flex-wrap: wrap; gap: 12px; } .heatmaps { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
        svg { background: #fff; border: 1px solid #e4e4e4; font: 11px system-ui, sans-serif; max-width: 100%; height: auto; }
        svg .chart-title { font-size: 13px; font-weight: 600; }
        svg .grid line { stroke: #eee; } svg .frame { fill: none; stroke: #999; } svg .axis line { stroke: #999; }
        svg .axis-label { font-size: 12px; fill: #444; } svg .empty-note { fill: #888; font-size: 13px; }
        svg path.line { fill: none; stroke-width: 1.8; stroke-linejoin: round; stroke-linecap: round; }
        svg .legend line { stroke-width: 2.5; } svg .reference { stroke: #888; stroke-dasharray: 4 3; }
        svg .cursor { stroke: #555; stroke-width: 1; } svg .readout { font-size: 11px; fill: #111; }
        pre { background: #f7f7f7; padding: 8px; white-space: pre-wrap; word-break: break-word; max-height: 360px; overflow: auto; }
        """;

    // Hover readouts only: every number the page shows is in the SVG already. The body attribute says the script
    // ran to its end (the browser test checks it).
    private const string Script = """
        (function () {
          'use strict';
          function numbers(text) { return (text || '').split(' ').map(Number); }
          function nearest(xs, x) {
            var best = -1, bestDistance = Infinity;
            for (var i = 0; i < xs.length; i++) { var d = Math.abs(xs[i] - x); if (d < bestDistance) { bestDistance = d; best = i; } }
            return best;
          }
          function format(v) { return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : String(+v.toPrecision(5)); }
          document.querySelectorAll('svg.chart[data-x0]').forEach(function (svg) {
            var x0 = +svg.dataset.x0, x1 = +svg.dataset.x1, left = +svg.dataset.left, width = +svg.dataset.width;
            var cursor = svg.querySelector('.cursor'), readout = svg.querySelector('.readout');
            var lines = Array.prototype.map.call(svg.querySelectorAll('path.line'), function (p) {
              return { label: p.dataset.label, xs: numbers(p.dataset.x), ys: numbers(p.dataset.y) };
            });
            function hide() { cursor.setAttribute('visibility', 'hidden'); readout.setAttribute('visibility', 'hidden'); }
            svg.addEventListener('mousemove', function (e) {
              var box = svg.getBoundingClientRect();
              var px = (e.clientX - box.left) * svg.viewBox.baseVal.width / box.width;
              if (px < left || px > left + width) { hide(); return; }
              var step = x0 + (px - left) / width * (x1 - x0), parts = [], shownStep = null;
              lines.forEach(function (l) {
                var i = nearest(l.xs, step);
                if (i < 0 || !isFinite(l.ys[i])) return;
                if (shownStep === null) shownStep = l.xs[i];
                parts.push(l.label + ' ' + format(l.ys[i]));
              });
              cursor.setAttribute('x1', px); cursor.setAttribute('x2', px); cursor.setAttribute('visibility', 'visible');
              readout.textContent = 'step ' + (shownStep === null ? Math.round(step) : shownStep) + (parts.length ? ': ' + parts.join(', ') : '');
              readout.setAttribute('visibility', 'visible');
            });
            svg.addEventListener('mouseleave', hide);
            svg.setAttribute('data-readout', 'ready');
          });
          document.body.setAttribute('data-report-script', 'ok');
        })();
        """;
}
