using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Reporting;

/// <summary>Maps values to colours: sequential from <see cref="Min"/> to <see cref="Max"/>, or diverging around <see cref="Centre"/>.</summary>
internal sealed record ColourScale(double Min, double Max, double? Centre = null)
{
    // Perceptually ordered (viridis) for "more is worse" values such as MaxVio.
    private static readonly (byte R, byte G, byte B)[] Sequential = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];
    // Blue below the centre, white at it, red above: under- and over-loaded experts.
    private static readonly (byte R, byte G, byte B)[] Diverging = [(33, 102, 172), (247, 247, 247), (178, 24, 43)];

    /// <summary>The value drawn at position <paramref name="t"/> in [0, 1] of the colour ramp (the centre, if any, at 0.5).</summary>
    public double ValueAt(double t) => Centre is double c
        ? t <= 0.5 ? Min + t / 0.5 * (c - Min) : c + (t - 0.5) / 0.5 * (Max - c)
        : Min + t * (Max - Min);

    public string Colour(double v)
    {
        if (!double.IsFinite(v)) return "#d9d9d9";
        double t;
        (byte R, byte G, byte B)[] stops;
        if (Centre is double c)
        {
            stops = Diverging;
            t = v <= c ? 0.5 * Fraction(v, Min, c) : 0.5 + 0.5 * Fraction(v, c, Max);
        }
        else
        {
            stops = Sequential;
            t = Fraction(v, Min, Max);
        }
        double pos = t * (stops.Length - 1);
        int i = Math.Min((int)pos, stops.Length - 2);
        double f = pos - i;
        var (a, b) = (stops[i], stops[i + 1]);
        return string.Create(CultureInfo.InvariantCulture, $"#{Mix(a.R, b.R, f):x2}{Mix(a.G, b.G, f):x2}{Mix(a.B, b.B, f):x2}");
    }

    private static double Fraction(double v, double lo, double hi) => hi > lo ? Math.Clamp((v - lo) / (hi - lo), 0, 1) : 0.5;

    private static int Mix(byte a, byte b, double f) => (int)Math.Round(a + (b - a) * f);
}

/// <summary>What a heatmap shows: <c>Values[row, column]</c>, NaN where there is no value.</summary>
/// <param name="Id">the svg element's id (ASCII letters, digits and dashes)</param>
/// <param name="ColumnName">what a column is, for tooltips and the axis ("step", "expert")</param>
/// <param name="ValueName">what a cell's value is, for tooltips and the colour scale</param>
internal sealed record HeatmapSpec(
    string Id, string Title, IReadOnlyList<string> RowLabels, string ColumnName, IReadOnlyList<string> ColumnLabels,
    double[,] Values, ColourScale Scale, string ValueName, int MaxCells = Heatmap.DefaultMaxCells);

/// <summary>
/// A heatmap as inline SVG: one <c>rect</c> per cell with a <c>&lt;title&gt;</c> tooltip (row, column, value),
/// row and column labels, and a colour scale. Beyond the spec's <c>MaxCells</c>, evenly spaced columns (always the
/// last) are drawn, so a long run's page stays small.
/// </summary>
internal static class Heatmap
{
    public const int DefaultMaxCells = 12_000;
    private const int Top = 30, Bottom = 40, ScaleWidth = 70, MaxGridWidth = 640, MinCellWidth = 2;

    public static string Render(HeatmapSpec spec)
    {
        int rows = spec.RowLabels.Count;
        int[] columns = ColumnsToDraw(spec.ColumnLabels.Count, rows, spec.MaxCells);
        int cellWidth = columns.Length == 0 ? 10 : Math.Clamp(MaxGridWidth / columns.Length, MinCellWidth, 24);
        int cellHeight = rows == 0 ? 10 : Math.Clamp(320 / rows, 3, 16);
        int left = 10 + (int)(Math.Min(18, spec.RowLabels.Select(l => l.Length).DefaultIfEmpty(4).Max()) * 6.4);
        int gridWidth = columns.Length * cellWidth, gridHeight = rows * cellHeight;
        int width = Math.Max(left + gridWidth + ScaleWidth + 20, left + (int)(spec.Title.Length * 7.2) + 10), height = Top + gridHeight + Bottom;

        var sb = new StringBuilder();
        string id = Html.Escape(spec.Id);
        sb.Append(CultureInfo.InvariantCulture, $"<svg id=\"{id}\" class=\"heatmap\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"{id}-title\">");
        sb.Append(CultureInfo.InvariantCulture, $"<title id=\"{id}-title\">{Html.Escape(spec.Title)}</title>");
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"chart-title\" x=\"{left}\" y=\"17\">{Html.Escape(spec.Title)}</text>");

        sb.Append("<g class=\"cells\">");
        for (int r = 0; r < rows; r++)
        {
            string rowLabel = Html.Escape(spec.RowLabels[r]);
            for (int k = 0; k < columns.Length; k++)
            {
                int c = columns[k];
                double v = spec.Values[r, c];
                sb.Append(CultureInfo.InvariantCulture,
                    $"<rect x=\"{left + k * cellWidth}\" y=\"{Top + r * cellHeight}\" width=\"{cellWidth}\" height=\"{cellHeight}\" fill=\"{spec.Scale.Colour(v)}\">");
                sb.Append(CultureInfo.InvariantCulture,
                    $"<title>{rowLabel}, {Html.Escape(spec.ColumnName)} {Html.Escape(spec.ColumnLabels[c])}: {Html.Escape(spec.ValueName)} {Html.Value(v)}</title></rect>");
            }
        }
        sb.Append("</g>");

        // Row labels: every row when they fit, else evenly spaced ones.
        int rowEvery = Math.Max(1, (int)Math.Ceiling(11.0 / cellHeight));
        sb.Append("<g class=\"axis y\">");
        for (int r = 0; r < rows; r += rowEvery)
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left - 4}\" y=\"{Top + r * cellHeight + cellHeight / 2.0:0.#}\" dy=\"4\" text-anchor=\"end\">{Html.Escape(spec.RowLabels[r])}</text>");
        sb.Append("</g>");
        int columnEvery = Math.Max(1, (int)Math.Ceiling(columns.Length / Math.Max(1.0, Math.Min(12, gridWidth / 40.0))));
        sb.Append("<g class=\"axis x\">");
        for (int k = 0; k < columns.Length; k += columnEvery)
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left + k * cellWidth + cellWidth / 2.0:0.#}\" y=\"{Top + gridHeight + 14}\" text-anchor=\"middle\">{Html.Escape(spec.ColumnLabels[columns[k]])}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"axis-label\" x=\"{left + gridWidth / 2}\" y=\"{Top + gridHeight + 32}\" text-anchor=\"middle\">{Html.Escape(spec.ColumnName)}</text></g>");
        AppendScale(sb, spec, left + gridWidth + 16, Math.Max(gridHeight, 60));
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>
    /// The columns drawn: all of them, or evenly spaced ones ending with the last when there are more cells than
    /// <paramref name="maxCells"/> or more columns than fit the grid's width at <see cref="MinCellWidth"/>.
    /// </summary>
    internal static int[] ColumnsToDraw(int columns, int rows, int maxCells)
    {
        int max = Math.Clamp(maxCells / Math.Max(1, rows), 1, MaxGridWidth / MinCellWidth);
        if (columns <= max) return Enumerable.Range(0, columns).ToArray();
        // Counting back from the last column keeps the newest values and spaces the rest evenly.
        return Enumerable.Range(0, max).Select(i => (int)((long)(columns - 1) * (i + 1) / max)).Distinct().ToArray();
    }

    private static void AppendScale(StringBuilder sb, HeatmapSpec spec, int x, int height)
    {
        const int Steps = 16;
        var s = spec.Scale;
        double barHeight = Math.Min(height, 160) / (double)Steps;
        sb.Append(CultureInfo.InvariantCulture, $"<g class=\"colour-scale\"><title>colour scale: {Html.Escape(spec.ValueName)}</title>");
        for (int i = 0; i < Steps; i++)
        {
            // Top of the bar is the maximum; a diverging scale's centre sits halfway.
            double v = s.ValueAt(1 - (i + 0.5) / Steps);
            sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x}\" y=\"{Top + i * barHeight:0.##}\" width=\"12\" height=\"{barHeight + 0.5:0.##}\" fill=\"{s.Colour(v)}\"/>");
        }
        double bottom = Top + Steps * barHeight;
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + 16}\" y=\"{Top + 8}\">{Html.Value(Round3(s.Max))}</text>");
        if (s.Centre is double c)
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + 16}\" y=\"{(Top + bottom) / 2 + 4:0.#}\">{Html.Value(Round3(c))}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + 16}\" y=\"{bottom}\">{Html.Value(Round3(s.Min))}</text></g>");
    }

    private static double Round3(double v) => double.IsFinite(v) && v != 0 ? Math.Round(v, Math.Clamp(2 - (int)Math.Floor(Math.Log10(Math.Abs(v))), 0, 15)) : v;
}
