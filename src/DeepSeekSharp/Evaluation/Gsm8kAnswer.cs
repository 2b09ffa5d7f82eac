using System.Globalization;
using System.Text.RegularExpressions;

namespace DeepSeekSharp.Evaluation;

/// <summary>
/// GSM8K's answer rule. A solution's final answer is the first number after its last <c>####</c>; a text without
/// <c>####</c> answers with its last number. A number is an optional minus and dollar sign, digits with optional
/// thousands commas, and an optional decimal part (<c>-$1,234.50</c>); commas and <c>$</c> are stripped and a full
/// stop after it is not part of it (<c>$18.</c> is 18). Answers are equal when they are equal as decimals
/// (<c>18</c> = <c>18.00</c>).
/// </summary>
public static partial class Gsm8kAnswer
{
    /// <summary>The marker GSM8K writes before a solution's final answer.</summary>
    public const string Marker = "####";

    [GeneratedRegex(@"-?\$?-?[0-9][0-9,]*(?:\.[0-9]+)?", RegexOptions.CultureInvariant)]
    private static partial Regex NumberPattern();

    /// <summary>The final answer of <paramref name="text"/>, normalised (<c>1,234</c> → <c>1234</c>), or null when it has none.</summary>
    public static string? Extract(string text)
    {
        int marker = text.LastIndexOf(Marker, StringComparison.Ordinal);
        if (marker >= 0)
        {
            var first = NumberPattern().Match(text, marker + Marker.Length);
            return first.Success ? Normalize(first.Value) : null;
        }
        Match? last = null;
        foreach (Match m in NumberPattern().Matches(text)) last = m;
        return last is null ? null : Normalize(last.Value);
    }

    /// <summary>The number without commas, dollar signs or a trailing full stop.</summary>
    public static string Normalize(string number)
    {
        string s = number.Replace(",", "", StringComparison.Ordinal).Replace("$", "", StringComparison.Ordinal).Trim();
        return s.TrimEnd('.');
    }

    /// <summary>The value of a normalised answer, or null when it is not a decimal number (or is too large for one).</summary>
    public static decimal? Value(string? answer) =>
        answer is not null && decimal.TryParse(answer, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal v) ? v : null;

    /// <summary>Whether the answer extracted from <paramref name="generation"/> equals <paramref name="reference"/> as a decimal.</summary>
    public static bool IsCorrect(string generation, decimal reference) => Value(Extract(generation)) == reference;
}
