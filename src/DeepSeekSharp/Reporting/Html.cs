using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Reporting;

/// <summary>
/// Text and numbers as they go into the report page. Everything that comes from a run (folder names, config values,
/// samples, metric names) passes through <see cref="Escape"/>, so no input can add markup or script to the page.
/// </summary>
internal static class Html
{
    /// <summary>
    /// Escapes for both element content and quoted attribute values. Control characters (other than tab and newline)
    /// and unpaired surrogates become U+FFFD: HTML forbids the former and UTF-8 cannot carry the latter.
    /// </summary>
    public static string Escape(string? text)
    {
        if (string.IsNullOrEmpty(text)) return "";
        var sb = new StringBuilder(text.Length + 16);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            switch (c)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '"': sb.Append("&quot;"); break;
                case '\'': sb.Append("&#39;"); break;
                case '\t' or '\n': sb.Append(c); break;
                default:
                    if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                    {
                        sb.Append(c).Append(text[++i]);
                    }
                    else if (char.IsSurrogate(c) || char.IsControl(c) || c is '\uFFFE' or '\uFFFF') sb.Append('\uFFFD');
                    else sb.Append(c);
                    break;
            }
        }
        return sb.ToString();
    }

    /// <summary>A coordinate in SVG user units: at most one decimal, invariant culture.</summary>
    public static string Coord(double v) => Math.Round(v, 1).ToString("0.#", CultureInfo.InvariantCulture);

    /// <summary>A metric value for tables and tooltips: whole numbers (steps, tokens) exactly, others to six significant digits, "–" when missing or not finite.</summary>
    public static string Value(double v) =>
        !double.IsFinite(v) ? "–"
        : v == Math.Floor(v) && Math.Abs(v) < 1e15 ? v.ToString("0", CultureInfo.InvariantCulture)
        : v.ToString("G6", CultureInfo.InvariantCulture);

    /// <summary>Compact text for axis ticks spaced <paramref name="tickStep"/> apart (enough decimals to tell them apart).</summary>
    public static string Tick(double v, double tickStep)
    {
        if (Math.Abs(v) < tickStep * 1e-6) return "0";
        double magnitude = Math.Max(Math.Abs(v), Math.Abs(tickStep));
        if (magnitude >= 1e6 || Math.Abs(tickStep) < 1e-4) return v.ToString("0.##e0", CultureInfo.InvariantCulture);
        if (tickStep >= 1000) return (v / 1000).ToString("0.##", CultureInfo.InvariantCulture) + "k";
        int decimals = Math.Clamp((int)Math.Ceiling(-Math.Log10(tickStep) - 1e-9), 0, 6);
        return v.ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
    }
}
