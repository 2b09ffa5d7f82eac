using System.Globalization;
using System.Text;

namespace DeepSeekSharp;

/// <summary>
/// Model output made safe for a terminal. Generated text can hold any character: an escape (U+001B) or a
/// right-to-left override (U+202E) printed raw rewrites or reorders what the user sees. Control and format characters,
/// line and paragraph separators and unpaired surrogates become visible <c>\uXXXX</c> escapes; newlines and tabs stay.
/// </summary>
public static class PrintableText
{
    public static string Escape(string text)
    {
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                int scalar = char.ConvertToUtf32(c, text[i + 1]);
                if (NeedsEscape(CharUnicodeInfo.GetUnicodeCategory(scalar)))
                    (sb ??= new StringBuilder(text, 0, i, text.Length + 16)).Append(CultureInfo.InvariantCulture, $"\\U{scalar:X8}");
                else sb?.Append(c).Append(text[i + 1]);
                i++;
                continue;
            }
            if (c is not ('\n' or '\t') && NeedsEscape(char.GetUnicodeCategory(c)))
                (sb ??= new StringBuilder(text, 0, i, text.Length + 16)).Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
            else sb?.Append(c);
        }
        return sb?.ToString() ?? text;
    }

    private static bool NeedsEscape(UnicodeCategory category) => category is UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.Surrogate;
}
