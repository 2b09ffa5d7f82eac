using System.Globalization;
using System.Text;

namespace DeepSeekSharp.FineTuning.Templates;

/// <summary>A template error: what went wrong and on which line of the template.</summary>
public sealed class JinjaException(string message, int line) : Exception(message)
{
    public int Line { get; } = line;
}

internal enum PieceKind { Text, Output, Statement }

/// <summary>One piece of a template after the whitespace rules: literal text, an <c>{{ expression }}</c> or a <c>{% tag %}</c>.</summary>
internal sealed record TemplatePiece(PieceKind Kind, string Source, int Line);

internal enum TokenKind { Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Text, int Line, object? Value = null);

/// <summary>
/// Splits a template into pieces and an expression into tokens, with the whitespace rules of Hugging Face's chat
/// template environment (Jinja2 with <c>trim_blocks</c> and <c>lstrip_blocks</c>): the newline after a tag or comment is
/// dropped, spaces and tabs before a tag that starts its line are dropped, and <c>-</c> at a delimiter strips all
/// whitespace on that side (<c>+</c> keeps it).
/// </summary>
internal static class JinjaLexer
{
    public static List<TemplatePiece> Split(string source)
    {
        var pieces = new List<TemplatePiece>();
        var text = new StringBuilder();
        int line = 1, textLine = 1, pos = 0;
        bool stripNextText = false, trimNextNewline = false;
        void FlushText()
        {
            if (text.Length > 0) pieces.Add(new TemplatePiece(PieceKind.Text, text.ToString(), textLine));
            text.Clear();
        }
        while (pos < source.Length)
        {
            int open = source.IndexOf('{', pos);
            while (open >= 0 && open + 1 < source.Length && source[open + 1] is not ('{' or '%' or '#')) open = source.IndexOf('{', open + 1);
            if (open < 0 || open + 1 >= source.Length) open = source.Length;
            // Literal text up to the next delimiter, with the previous tag's right-side rules applied. A line starts here
            // at the top of the template and where trim_blocks took the previous tag's newline (lstrip_blocks needs it).
            string literal = source[pos..open];
            bool lineStarting = pos == 0;
            if (stripNextText) literal = literal.TrimStart();
            else if (trimNextNewline && literal.StartsWith('\n')) (literal, lineStarting) = (literal[1..], true);
            else if (trimNextNewline && literal.StartsWith("\r\n", StringComparison.Ordinal)) (literal, lineStarting) = (literal[2..], true);
            stripNextText = trimNextNewline = false;
            if (text.Length == 0) textLine = line;
            line += Count(source, pos, open);
            if (open == source.Length)
            {
                text.Append(literal);
                break;
            }
            char kind = source[open + 1];
            string close = kind switch { '{' => "}}", '%' => "%}", _ => "#}" };
            int inner = open + 2;
            bool stripLeft = inner < source.Length && source[inner] == '-', keepLeft = inner < source.Length && source[inner] == '+';
            if (stripLeft || keepLeft) inner++;
            int end = FindClose(source, inner, close, kind == '#');
            if (end < 0) throw new JinjaException($"'{source.Substring(open, 2)}' is never closed", line);
            bool stripRight = source[end - 1] == '-' && end - 1 >= inner, keepRight = source[end - 1] == '+' && end - 1 >= inner;
            string body = source[inner..(stripRight || keepRight ? end - 1 : end)];
            if (stripLeft) literal = literal.TrimEnd();
            else if (kind != '{' && !keepLeft)
            {
                // lstrip_blocks: a tag preceded on its line only by spaces and tabs takes them away.
                int lineStart = literal.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && literal.AsSpan(lineStart).Trim(" \t").IsEmpty) literal = literal[..lineStart];
            }
            text.Append(literal);
            int tagLine = line;
            line += Count(source, open, end + 2);
            pos = end + 2;
            if (stripRight) stripNextText = true;
            else if (kind != '{' && !keepRight) trimNextNewline = true;
            if (kind == '#') continue;
            FlushText();
            pieces.Add(new TemplatePiece(kind == '{' ? PieceKind.Output : PieceKind.Statement, body.Trim(), tagLine));
        }
        FlushText();
        return pieces;
    }

    private static int Count(string s, int from, int to)
    {
        int n = 0;
        for (int i = from; i < to && i < s.Length; i++) if (s[i] == '\n') n++;
        return n;
    }

    /// <summary>The index of <paramref name="close"/> after <paramref name="from"/>, skipping string literals inside tags.</summary>
    private static int FindClose(string s, int from, string close, bool comment)
    {
        char quote = '\0';
        for (int i = from; i + 1 < s.Length; i++)
        {
            char c = s[i];
            if (quote != '\0')
            {
                if (c == '\\') i++;
                else if (c == quote) quote = '\0';
                continue;
            }
            if (!comment && c is '\'' or '"') quote = c;
            else if (c == close[0] && s[i + 1] == close[1]) return i;
        }
        return -1;
    }

    private static readonly string[] Operators = ["==", "!=", "<=", ">=", "//", "**", "<", ">", "+", "-", "*", "/", "%", "~", "|", ".", ",", ":", "(", ")", "[", "]", "{", "}", "="];

    public static List<Token> Tokenize(string source, int line)
    {
        var tokens = new List<Token>();
        int i = 0;
        while (i < source.Length)
        {
            char c = source[i];
            if (char.IsWhiteSpace(c))
            {
                if (c == '\n') line++;
                i++;
                continue;
            }
            if (char.IsLetter(c) || c == '_')
            {
                int start = i;
                while (i < source.Length && (char.IsLetterOrDigit(source[i]) || source[i] == '_')) i++;
                tokens.Add(new Token(TokenKind.Name, source[start..i], line));
                continue;
            }
            if (char.IsAsciiDigit(c))
            {
                int start = i;
                while (i < source.Length && (char.IsAsciiDigit(source[i]) || source[i] == '_')) i++;
                bool isFloat = false;
                if (i + 1 < source.Length && source[i] == '.' && char.IsAsciiDigit(source[i + 1]))
                {
                    isFloat = true;
                    i++;
                    while (i < source.Length && char.IsAsciiDigit(source[i])) i++;
                }
                string digits = source[start..i].Replace("_", "");
                tokens.Add(isFloat
                    ? new Token(TokenKind.Float, digits, line, double.Parse(digits, CultureInfo.InvariantCulture))
                    : new Token(TokenKind.Integer, digits, line, long.Parse(digits, CultureInfo.InvariantCulture)));
                continue;
            }
            if (c is '\'' or '"')
            {
                var sb = new StringBuilder();
                int j = i + 1;
                for (; j < source.Length && source[j] != c; j++)
                {
                    if (source[j] != '\\' || j + 1 >= source.Length) { sb.Append(source[j]); continue; }
                    char e = source[++j];
                    switch (e)
                    {
                        case 'n': sb.Append('\n'); break;
                        case 't': sb.Append('\t'); break;
                        case 'r': sb.Append('\r'); break;
                        case '\\': sb.Append('\\'); break;
                        case '\'': sb.Append('\''); break;
                        case '"': sb.Append('"'); break;
                        case 'u' when j + 4 < source.Length:
                            sb.Append((char)int.Parse(source.AsSpan(j + 1, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                            j += 4;
                            break;
                        default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes as written
                    }
                }
                if (j >= source.Length) throw new JinjaException("unterminated string literal", line);
                tokens.Add(new Token(TokenKind.String, sb.ToString(), line, sb.ToString()));
                i = j + 1;
                continue;
            }
            string? op = null;
            foreach (var o in Operators)
                if (string.CompareOrdinal(source, i, o, 0, o.Length) == 0) { op = o; break; }
            if (op is null) throw new JinjaException($"unexpected character '{c}'", line);
            tokens.Add(new Token(TokenKind.Operator, op, line));
            i += op.Length;
        }
        tokens.Add(new Token(TokenKind.End, "", line));
        return tokens;
    }
}
