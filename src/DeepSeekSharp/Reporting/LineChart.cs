using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Reporting;

/// <summary>One line of a chart: a run's values of one metric over steps.</summary>
/// <param name="Label">legend text (escaped when drawn)</param>
/// <param name="Colour">CSS colour, chosen by the report (never from input)</param>
/// <param name="X">steps, ascending [n]</param>
/// <param name="Y">values [n]; NaN, ±∞ for missing (drawn as a gap)</param>
internal sealed record ChartSeries(string Label, string Colour, double[] X, double[] Y, bool Dashed = false);

/// <summary>What a line chart shows.</summary>
/// <param name="Id">the svg element's id (ASCII letters, digits and dashes)</param>
/// <param name="EmptyNote">what the chart says when no series has a finite value</param>
/// <param name="ReferenceY">a dashed horizontal line (e.g. 0 for differences), or null</param>
internal sealed record LineChartSpec(string Id, string Title, string YLabel, IReadOnlyList<ChartSeries> Series, string EmptyNote, double? ReferenceY = null);

/// <summary>
/// A line chart as inline SVG: round-number axes with ticks and labels, a legend, one path per series (split at
/// gaps), markers where a series has few points, and a <c>&lt;title&gt;</c> per element for hover text. The page's
/// script only adds a readout; everything is visible without it.
/// </summary>
internal static class LineChart
{
    public const int Width = 560, Height = 300;
    public const int MaxPointsPerSeries = 600;
    private const int Left = 64, Right = 14, Bottom = 44, TitleHeight = 24, LegendRowHeight = 16;
    private const int MarkersUpTo = 60;
    private const int LegendLabelChars = 36;

    public static string Render(LineChartSpec spec)
    {
        var drawn = spec.Series
            .Select(s => (Series: s, Points: Downsampler.MinMax(s.X, s.Y, MaxPointsPerSeries)))
            .Where(s => s.Points.Y.Any(double.IsFinite))
            .ToList();
        var legendRows = LegendRows(drawn.Select(d => d.Series).ToList());
        int top = TitleHeight + Math.Max(1, legendRows.Count) * LegendRowHeight + 8;
        int plotWidth = Width - Left - Right, plotHeight = Height - top - Bottom;

        var sb = new StringBuilder();
        string id = Html.Escape(spec.Id);
        sb.Append(CultureInfo.InvariantCulture, $"<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {Width} {Height}\" width=\"{Width}\" height=\"{Height}\" role=\"img\" aria-labelledby=\"{id}-title\"");
        if (drawn.Count == 0)
        {
            sb.Append(" data-empty=\"true\">");
            sb.Append(CultureInfo.InvariantCulture, $"<title id=\"{id}-title\">{Html.Escape(spec.Title)}</title>");
            AppendTitle(sb, spec.Title);
            sb.Append(CultureInfo.InvariantCulture, $"<rect class=\"frame\" x=\"{Left}\" y=\"{top}\" width=\"{plotWidth}\" height=\"{plotHeight}\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text class=\"empty-note\" x=\"{Left + plotWidth / 2}\" y=\"{top + plotHeight / 2}\" text-anchor=\"middle\">{Html.Escape(spec.EmptyNote)}</text></svg>");
            return sb.ToString();
        }

        double xMin = drawn.Min(d => d.Points.X[0]), xMax = drawn.Max(d => d.Points.X[^1]);
        var finiteY = drawn.SelectMany(d => d.Points.Y.Where(double.IsFinite)).ToList();
        double yMin = finiteY.Min(), yMax = finiteY.Max();
        if (spec.ReferenceY is double r) { yMin = Math.Min(yMin, r); yMax = Math.Max(yMax, r); }
        var xAxis = Axis.Nice(xMin, xMax, 6);
        var yAxis = Axis.Nice(yMin, yMax, 5);
        double Sx(double v) => xAxis.Scale(v, Left, Left + plotWidth);
        double Sy(double v) => yAxis.Scale(v, top + plotHeight, top);

        sb.Append(CultureInfo.InvariantCulture, $" data-x0=\"{xAxis.Min:R}\" data-x1=\"{xAxis.Max:R}\" data-left=\"{Left}\" data-width=\"{plotWidth}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<title id=\"{id}-title\">{Html.Escape(spec.Title)}</title>");
        AppendTitle(sb, spec.Title);

        sb.Append("<g class=\"grid\">");
        foreach (double t in yAxis.Ticks())
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" x2=\"{Left + plotWidth}\" y1=\"{Html.Coord(Sy(t))}\" y2=\"{Html.Coord(Sy(t))}\"/>");
        sb.Append("</g>");
        sb.Append(CultureInfo.InvariantCulture, $"<rect class=\"frame\" x=\"{Left}\" y=\"{top}\" width=\"{plotWidth}\" height=\"{plotHeight}\"/>");
        AppendAxes(sb, xAxis, yAxis, Sx, Sy, top, plotHeight, spec.YLabel);
        if (spec.ReferenceY is double refY)
            sb.Append(CultureInfo.InvariantCulture, $"<line class=\"reference\" x1=\"{Left}\" x2=\"{Left + plotWidth}\" y1=\"{Html.Coord(Sy(refY))}\" y2=\"{Html.Coord(Sy(refY))}\"/>");

        sb.Append("<g class=\"series\">");
        foreach (var (series, (x, y)) in drawn)
        {
            var px = x.Select(Sx).ToArray();
            var py = y.Select(v => double.IsFinite(v) ? Sy(v) : double.NaN).ToArray();
            string label = Html.Escape(series.Label);
            sb.Append(CultureInfo.InvariantCulture, $"<path class=\"line\" d=\"{PathData(px, py)}\" stroke=\"{series.Colour}\"");
            if (series.Dashed) sb.Append(" stroke-dasharray=\"6 4\"");
            sb.Append(CultureInfo.InvariantCulture, $" data-label=\"{label}\" data-x=\"{Join(x)}\" data-y=\"{Join(y)}\"><title>{label}</title></path>");
            if (x.Length <= MarkersUpTo)
                for (int i = 0; i < x.Length; i++)
                    if (double.IsFinite(y[i]))
                        sb.Append(CultureInfo.InvariantCulture, $"<circle class=\"marker\" cx=\"{Html.Coord(px[i])}\" cy=\"{Html.Coord(py[i])}\" r=\"2.5\" fill=\"{series.Colour}\"><title>{label}: step {Html.Value(x[i])}, {Html.Value(y[i])}</title></circle>");
        }
        sb.Append("</g>");
        AppendLegend(sb, legendRows);
        // Hidden until the page's script moves them with the pointer.
        sb.Append(CultureInfo.InvariantCulture, $"<line class=\"cursor\" x1=\"{Left}\" x2=\"{Left}\" y1=\"{top}\" y2=\"{top + plotHeight}\" visibility=\"hidden\"/>");
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"readout\" x=\"{Left + 4}\" y=\"{top + 12}\" visibility=\"hidden\"></text>");
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>
    /// SVG path data through screen points: <c>M</c> starts a segment (the first point, and the first after a gap),
    /// <c>L</c> continues it; a NaN coordinate is a gap. A segment of one point gets a zero-length line so round
    /// line caps draw it as a dot.
    /// </summary>
    internal static string PathData(ReadOnlySpan<double> px, ReadOnlySpan<double> py)
    {
        var sb = new StringBuilder(px.Length * 12);
        bool inSegment = false;
        int segmentLength = 0;
        for (int i = 0; i < px.Length; i++)
        {
            if (!double.IsFinite(px[i]) || !double.IsFinite(py[i]))
            {
                CloseSegment(sb, inSegment, segmentLength);
                inSegment = false;
                continue;
            }
            if (!inSegment) { sb.Append('M'); segmentLength = 0; inSegment = true; }
            else sb.Append('L');
            sb.Append(Html.Coord(px[i])).Append(' ').Append(Html.Coord(py[i]));
            segmentLength++;
        }
        CloseSegment(sb, inSegment, segmentLength);
        return sb.ToString();
    }

    private static void CloseSegment(StringBuilder sb, bool inSegment, int segmentLength)
    {
        if (inSegment && segmentLength == 1) sb.Append("h0");
    }

    private static string Join(double[] values) => string.Join(' ', values.Select(v => double.IsFinite(v) ? v.ToString("G6", CultureInfo.InvariantCulture) : "NaN"));

    private static void AppendTitle(StringBuilder sb, string title) =>
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"chart-title\" x=\"{Width / 2}\" y=\"17\" text-anchor=\"middle\">{Html.Escape(title)}</text>");

    private static void AppendAxes(StringBuilder sb, Axis xAxis, Axis yAxis, Func<double, double> sx, Func<double, double> sy, int top, int plotHeight, string yLabel)
    {
        int bottom = top + plotHeight;
        sb.Append("<g class=\"axis x\">");
        foreach (double t in xAxis.Ticks())
        {
            string x = Html.Coord(sx(t));
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{x}\" x2=\"{x}\" y1=\"{bottom}\" y2=\"{bottom + 5}\"/><text x=\"{x}\" y=\"{bottom + 17}\" text-anchor=\"middle\">{Html.Tick(t, xAxis.Step)}</text>");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"axis-label\" x=\"{Left + (Width - Left - Right) / 2}\" y=\"{Height - 6}\" text-anchor=\"middle\">step</text></g>");
        sb.Append("<g class=\"axis y\">");
        foreach (double t in yAxis.Ticks())
        {
            string y = Html.Coord(sy(t));
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left - 5}\" x2=\"{Left}\" y1=\"{y}\" y2=\"{y}\"/><text x=\"{Left - 8}\" y=\"{y}\" dy=\"4\" text-anchor=\"end\">{Html.Tick(t, yAxis.Step)}</text>");
        }
        int mid = top + plotHeight / 2;
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"axis-label\" x=\"14\" y=\"{mid}\" transform=\"rotate(-90 14 {mid})\" text-anchor=\"middle\">{Html.Escape(yLabel)}</text></g>");
    }

    /// <summary>Legend entries laid out left to right, wrapping to new rows (positions in SVG units).</summary>
    private static List<List<(ChartSeries Series, string Shown, int X)>> LegendRows(List<ChartSeries> series)
    {
        var rows = new List<List<(ChartSeries, string, int)>>();
        var row = new List<(ChartSeries, string, int)>();
        int x = Left;
        foreach (var s in series)
        {
            string shown = s.Label.Length > LegendLabelChars ? s.Label[..(LegendLabelChars - 1)] + "…" : s.Label;
            int width = 26 + (int)(shown.Length * 6.6) + 14;
            if (row.Count > 0 && x + width > Width - Right) { rows.Add(row); row = []; x = Left; }
            row.Add((s, shown, x));
            x += width;
        }
        if (row.Count > 0) rows.Add(row);
        return rows;
    }

    private static void AppendLegend(StringBuilder sb, List<List<(ChartSeries Series, string Shown, int X)>> rows)
    {
        sb.Append("<g class=\"legend\">");
        for (int r = 0; r < rows.Count; r++)
        {
            int y = TitleHeight + r * LegendRowHeight + 8;
            foreach (var (s, shown, x) in rows[r])
            {
                string dash = s.Dashed ? " stroke-dasharray=\"6 4\"" : "";
                sb.Append(CultureInfo.InvariantCulture, $"<g><title>{Html.Escape(s.Label)}</title><line x1=\"{x}\" x2=\"{x + 20}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{s.Colour}\"{dash}/>");
                sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + 26}\" y=\"{y}\" dy=\"4\">{Html.Escape(shown)}</text></g>");
            }
        }
        sb.Append("</g>");
    }
}
