using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace DeepSeekSharp.Tokenization;

/// <summary>
/// A regex that matches by Unicode scalar values like the Oniguruma/Rust engines HF tokenizers use. .NET's Regex
/// sees UTF-16 code units, so <c>\p{L}</c> or <c>\p{S}</c> never match a character outside the BMP (emoji,
/// CJK Ext-B, math letters) and would split it into lone surrogates. We replace each such character by one BMP
/// stand-in of the same general category, match, and map the match boundaries back to the original text.
/// A pattern comes from a tokenizer file, so it is compiled once with a match timeout: one that does not parse, or that
/// backtracks catastrophically on some input (<c>(a+)+$</c>), is an error naming the file instead of a crash or a hang.
/// </summary>
public sealed class RunePreservingRegex
{
    /// <summary>
    /// The longest one match may take. The tokenizers' patterns match a window of text (<see cref="HfTokenizer"/> feeds
    /// at most <see cref="HfTokenizer.WindowChars"/> characters) in milliseconds; a catastrophic pattern takes minutes
    /// on a few dozen characters.
    /// </summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    private readonly Regex _regex;
    private readonly string _source;

    /// <param name="pattern">the regex</param>
    /// <param name="source">where the pattern comes from (a tokenizer file), for error messages</param>
    public RunePreservingRegex(string pattern, string source = "built-in pre-tokenizer")
    {
        _source = source;
        try { _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout); }
        catch (ArgumentException e) // RegexParseException
        {
            throw new DeepSeekSharpException($"{source}: pre-tokenizer regex '{pattern}' does not parse ({e.Message.ReplaceLineEndings(" ")})");
        }
    }

    public string Pattern => _regex.ToString();

    /// <summary>Stand-ins outside every range the DeepSeek/GPT patterns name explicitly (ASCII, CJK, kana).</summary>
    private static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => 'À',
        UnicodeCategory.LowercaseLetter => 'à',
        UnicodeCategory.TitlecaseLetter => 'ǅ',
        UnicodeCategory.ModifierLetter => 'ʰ',
        UnicodeCategory.OtherLetter => 'ª',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '²',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '«',
        UnicodeCategory.FinalQuotePunctuation => '»',
        UnicodeCategory.OtherPunctuation => '¡',
        UnicodeCategory.MathSymbol => '±',
        UnicodeCategory.CurrencySymbol => '¢',
        UnicodeCategory.ModifierSymbol => '\u02C2',
        UnicodeCategory.OtherSymbol => '©',
        UnicodeCategory.SpaceSeparator => '\u2000',
        UnicodeCategory.Format => '\u200B',
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\uFFFF', // unassigned
    };

    /// <summary>Calls <paramref name="onMatch"/>(start, length) for each match, in original UTF-16 indices.</summary>
    public void Matches(string text, Action<int, int> onMatch)
    {
        try { MatchesWithin(text, onMatch); }
        catch (RegexMatchTimeoutException)
        {
            throw new DeepSeekSharpException($"{_source}: pre-tokenizer regex '{Pattern}' took longer than {MatchTimeout.TotalSeconds:0} s on one piece of text (catastrophic backtracking?)");
        }
    }

    private void MatchesWithin(string text, Action<int, int> onMatch)
    {
        if (!HasSurrogates(text))
        {
            for (var m = _regex.Match(text); m.Success; m = m.NextMatch())
                if (m.Length > 0) onMatch(m.Index, m.Length);
            return;
        }
        var compact = new StringBuilder(text.Length);
        var origin = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            origin.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                compact.Append(StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]))));
                i++;
            }
            else compact.Append(text[i]);
        }
        origin.Add(text.Length);
        string s = compact.ToString();
        for (var m = _regex.Match(s); m.Success; m = m.NextMatch())
            if (m.Length > 0) onMatch(origin[m.Index], origin[m.Index + m.Length] - origin[m.Index]);
    }

    private static bool HasSurrogates(string s)
    {
        foreach (char c in s) if (char.IsSurrogate(c)) return true;
        return false;
    }
}
