namespace DeepSeekSharp.Reporting;

/// <summary>
/// Thins a series for drawing. A plot is a few hundred pixels wide, so thousands of records would only add bytes:
/// the points are cut into equal runs and each run keeps its lowest and highest value (so spikes survive), the
/// series' first and last points, and a gap (NaN) where the run had one, so a stretch of missing values still
/// shows as a break in the line.
/// </summary>
internal static class Downsampler
{
    /// <summary>
    /// Returns at most <paramref name="maxPoints"/> points (at least 8 are allowed) in step order; NaN in
    /// <c>Y</c> marks a gap (a non-finite or missing value) and never appears twice in a row or at either end.
    /// </summary>
    /// <param name="x">steps, ascending [n]</param>
    /// <param name="y">values [n]; NaN or ±∞ for missing</param>
    public static (double[] X, double[] Y) MinMax(ReadOnlySpan<double> x, ReadOnlySpan<double> y, int maxPoints)
    {
        if (x.Length != y.Length) throw new ArgumentException("x and y must have the same length");
        maxPoints = Math.Max(8, maxPoints);
        var outX = new List<double>(Math.Min(x.Length, maxPoints));
        var outY = new List<double>(Math.Min(x.Length, maxPoints));
        if (x.Length <= maxPoints)
        {
            for (int i = 0; i < x.Length; i++) Add(outX, outY, x[i], y[i]);
        }
        else
        {
            // Each bucket emits at most 3 points (min, max, one gap) and the first/last bucket one more.
            int buckets = (maxPoints - 2) / 3;
            Span<int> keep = stackalloc int[4];
            for (int b = 0; b < buckets; b++)
            {
                int start = (int)((long)x.Length * b / buckets), end = (int)((long)x.Length * (b + 1) / buckets);
                int lo = -1, hi = -1, gap = -1;
                for (int i = start; i < end; i++)
                {
                    if (!double.IsFinite(y[i])) { if (gap < 0) gap = i; continue; }
                    if (lo < 0 || y[i] < y[lo]) lo = i;
                    if (hi < 0 || y[i] > y[hi]) hi = i;
                }
                int count = 0;
                if (b == 0) keep[count++] = 0;
                if (lo >= 0) keep[count++] = lo;
                if (hi >= 0) keep[count++] = hi;
                if (gap >= 0) keep[count++] = gap;
                if (b == buckets - 1) keep[count++] = x.Length - 1;
                var chosen = keep[..count];
                chosen.Sort();
                int previous = -1;
                foreach (int i in chosen)
                {
                    if (i == previous) continue;
                    Add(outX, outY, x[i], y[i]);
                    previous = i;
                }
            }
        }
        if (outY.Count > 0 && double.IsNaN(outY[^1])) { outX.RemoveAt(outX.Count - 1); outY.RemoveAt(outY.Count - 1); }
        return (outX.ToArray(), outY.ToArray());
    }

    private static void Add(List<double> xs, List<double> ys, double x, double y)
    {
        if (!double.IsFinite(y))
        {
            // A gap only matters between two drawn points.
            if (ys.Count == 0 || double.IsNaN(ys[^1])) return;
            y = double.NaN;
        }
        xs.Add(x);
        ys.Add(y);
    }
}
