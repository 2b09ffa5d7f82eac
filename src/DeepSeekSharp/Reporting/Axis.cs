namespace DeepSeekSharp.Reporting;

/// <summary>A plot axis: a domain widened to round numbers and the ticks on it.</summary>
/// <param name="Min">lower end of the domain (a tick)</param>
/// <param name="Max">upper end of the domain (a tick), greater than <paramref name="Min"/></param>
/// <param name="Step">distance between ticks: 1, 2 or 5 times a power of ten</param>
internal sealed record Axis(double Min, double Max, double Step)
{
    private const double Limit = 1e300;

    /// <summary>The smallest round domain holding [<paramref name="min"/>, <paramref name="max"/>] with about <paramref name="targetTicks"/> ticks.</summary>
    public static Axis Nice(double min, double max, int targetTicks = 5)
    {
        if (!double.IsFinite(min) || !double.IsFinite(max)) (min, max) = (0, 1);
        if (max < min) (min, max) = (max, min);
        // Beyond this the range itself overflows; such values are drawn at the edge.
        (min, max) = (Math.Max(min, -Limit), Math.Min(max, Limit));
        if (max - min < Math.Max(Math.Abs(max), 1e-300) * 1e-9)
        {
            // One value (or all equal): centre it in a small range of its own size.
            double pad = Math.Abs(min) > 0 ? Math.Abs(min) * 0.1 : 1;
            (min, max) = (min - pad, max + pad);
        }
        double rough = (max - min) / Math.Max(1, targetTicks);
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(rough)));
        double normalised = rough / magnitude;
        double step = (normalised < 1.5 ? 1 : normalised < 3 ? 2 : normalised < 7 ? 5 : 10) * magnitude;
        return new Axis(Math.Floor(min / step) * step, Math.Ceiling(max / step) * step, step);
    }

    public IEnumerable<double> Ticks()
    {
        int count = (int)Math.Round((Max - Min) / Step);
        for (int i = 0; i <= count; i++) yield return Min + i * Step;
    }

    /// <summary>Maps a value in the domain to [<paramref name="from"/>, <paramref name="to"/>].</summary>
    public double Scale(double v, double from, double to) => from + (Math.Clamp(v, Min, Max) - Min) / (Max - Min) * (to - from);
}
