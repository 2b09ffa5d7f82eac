namespace DeepSeekSharp.FineTuning.Templates;

// The template's syntax tree: statements (nodes) and expressions, each with the line it came from.
internal abstract record Node(int Line);
internal sealed record TextNode(string Text, int Line) : Node(Line);
internal sealed record OutputNode(Expr Value, int Line) : Node(Line);
internal sealed record IfNode(List<(Expr Condition, List<Node> Body)> Branches, List<Node>? Else, int Line) : Node(Line);
internal sealed record ForNode(List<string> Targets, Expr Iterable, Expr? Filter, List<Node> Body, List<Node>? Else, int Line) : Node(Line);
internal sealed record SetNode(string Name, string? Attribute, Expr? Value, List<Node>? Body, int Line) : Node(Line);
internal sealed record MacroNode(string Name, List<(string Name, Expr? Default)> Parameters, List<Node> Body, int Line) : Node(Line);
internal sealed record LoopControlNode(bool IsBreak, int Line) : Node(Line);
internal sealed record BlockNode(List<Node> Body, int Line) : Node(Line);

internal abstract record Expr(int Line);
internal sealed record LiteralExpr(object? Value, int Line) : Expr(Line);
internal sealed record NameExpr(string Name, int Line) : Expr(Line);
internal sealed record ListExpr(List<Expr> Items, int Line) : Expr(Line);
internal sealed record DictExpr(List<(Expr Key, Expr Value)> Items, int Line) : Expr(Line);
internal sealed record AttributeExpr(Expr Target, string Name, int Line) : Expr(Line);
internal sealed record IndexExpr(Expr Target, Expr Index, int Line) : Expr(Line);
internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Line) : Expr(Line);
internal sealed record CallExpr(Expr Target, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
internal sealed record FilterExpr(Expr Target, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
internal sealed record TestExpr(Expr Target, string Name, List<Expr> Args, bool Negated, int Line) : Expr(Line);
internal sealed record UnaryExpr(string Op, Expr Operand, int Line) : Expr(Line);
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line) : Expr(Line);
internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else, int Line) : Expr(Line);

/// <summary>
/// Parses the pieces of <see cref="JinjaLexer"/> into a tree, with Jinja2's operator precedence (conditional, or, and,
/// not, comparisons and tests, + -, ~, * / // %, **, unary minus, postfix). Tags other than if/for/set/macro/
/// break/continue/generation, and syntax other than Jinja2 expressions, are errors naming the line.
/// </summary>
internal sealed class JinjaParser
{
    private readonly List<TemplatePiece> _pieces;
    private int _piece;
    private List<Token> _tokens = [];
    private int _pos;

    private JinjaParser(List<TemplatePiece> pieces) { _pieces = pieces; }

    public static List<Node> Parse(string source)
    {
        var parser = new JinjaParser(JinjaLexer.Split(source));
        var body = parser.ParseBody(out string? end);
        if (end is not null) throw new JinjaException($"unexpected '{{% {end} %}}'", parser._pieces[parser._piece - 1].Line);
        return body;
    }

    /// <summary>Nodes up to the end of the template or a closing/continuing tag, whose first word is returned in <paramref name="end"/>.</summary>
    private List<Node> ParseBody(out string? end)
    {
        var nodes = new List<Node>();
        end = null;
        while (_piece < _pieces.Count)
        {
            var p = _pieces[_piece++];
            switch (p.Kind)
            {
                case PieceKind.Text:
                    nodes.Add(new TextNode(p.Source, p.Line));
                    break;
                case PieceKind.Output:
                    Begin(p);
                    nodes.Add(new OutputNode(ParseExpression(), p.Line));
                    ExpectEnd();
                    break;
                default:
                    Begin(p);
                    var word = Next();
                    if (word.Kind != TokenKind.Name) throw new JinjaException($"expected a tag name in '{{% {p.Source} %}}'", p.Line);
                    switch (word.Text)
                    {
                        case "if": nodes.Add(ParseIf(p.Line)); break;
                        case "for": nodes.Add(ParseFor(p.Line)); break;
                        case "set": nodes.Add(ParseSet(p.Line)); break;
                        case "macro": nodes.Add(ParseMacro(p.Line)); break;
                        case "break" or "continue":
                            ExpectEnd();
                            nodes.Add(new LoopControlNode(word.Text == "break", p.Line));
                            break;
                        case "generation":
                            // transformers' {% generation %} marks assistant text for its mask; it renders its body as is.
                            ExpectEnd();
                            nodes.Add(new BlockNode(ParseUntil(p.Line, "endgeneration"), p.Line));
                            break;
                        case "elif" or "else" or "endif" or "endfor" or "endset" or "endmacro" or "endgeneration":
                            end = word.Text;
                            return nodes;
                        default: throw new JinjaException($"the tag '{word.Text}' is not supported", p.Line);
                    }
                    break;
            }
        }
        return nodes;
    }

    private List<Node> ParseUntil(int line, string endTag)
    {
        var body = ParseBody(out var end);
        if (end != endTag) throw new JinjaException(end is null ? $"missing '{{% {endTag} %}}'" : $"unexpected '{{% {end} %}}' (expected {endTag})", line);
        ExpectEnd();
        return body;
    }

    private IfNode ParseIf(int line)
    {
        var branches = new List<(Expr, List<Node>)>();
        var condition = ParseExpression();
        ExpectEnd();
        while (true)
        {
            var body = ParseBody(out var end);
            branches.Add((condition, body));
            if (end == "elif")
            {
                condition = ParseExpression();
                ExpectEnd();
                continue;
            }
            if (end == "else")
            {
                ExpectEnd();
                return new IfNode(branches, ParseUntil(line, "endif"), line);
            }
            if (end != "endif") throw new JinjaException("missing '{% endif %}'", line);
            ExpectEnd();
            return new IfNode(branches, null, line);
        }
    }

    private ForNode ParseFor(int line)
    {
        var targets = new List<string> { ExpectName() };
        while (TryOperator(",")) targets.Add(ExpectName());
        var inWord = Next();
        if (inWord.Text != "in") throw new JinjaException("expected 'in' in a for tag", line);
        var iterable = ParseConditionalFree();
        Expr? filter = null;
        if (Peek().Kind == TokenKind.Name && Peek().Text == "if")
        {
            Next();
            filter = ParseOr();
        }
        if (Peek().Kind == TokenKind.Name && Peek().Text == "recursive") throw new JinjaException("recursive loops are not supported", line);
        ExpectEnd();
        var body = ParseBody(out var end);
        List<Node>? orElse = null;
        if (end == "else")
        {
            ExpectEnd();
            orElse = ParseBody(out end);
        }
        if (end != "endfor") throw new JinjaException("missing '{% endfor %}'", line);
        ExpectEnd();
        return new ForNode(targets, iterable, filter, body, orElse, line);
    }

    private SetNode ParseSet(int line)
    {
        string name = ExpectName();
        string? attribute = TryOperator(".") ? ExpectName() : null;
        if (Peek().Kind == TokenKind.Operator && Peek().Text == ",") throw new JinjaException("set with several targets is not supported", line);
        if (Peek().Kind == TokenKind.End)
        {
            ExpectEnd();
            return new SetNode(name, attribute, null, ParseUntil(line, "endset"), line);
        }
        ExpectOperator("=");
        var value = ParseExpression();
        ExpectEnd();
        return new SetNode(name, attribute, value, null, line);
    }

    private MacroNode ParseMacro(int line)
    {
        string name = ExpectName();
        ExpectOperator("(");
        var parameters = new List<(string, Expr?)>();
        while (!TryOperator(")"))
        {
            if (parameters.Count > 0) ExpectOperator(",");
            string p = ExpectName();
            parameters.Add((p, TryOperator("=") ? ParseExpression() : null));
        }
        ExpectEnd();
        return new MacroNode(name, parameters, ParseUntil(line, "endmacro"), line);
    }

    // ---- expressions ----

    private void Begin(TemplatePiece p)
    {
        _tokens = JinjaLexer.Tokenize(p.Source, p.Line);
        _pos = 0;
    }

    private Token Peek(int ahead = 0) => _tokens[Math.Min(_pos + ahead, _tokens.Count - 1)];

    private Token Next() => _tokens[Math.Min(_pos++, _tokens.Count - 1)];

    private bool TryOperator(string op)
    {
        if (Peek().Kind != TokenKind.Operator || Peek().Text != op) return false;
        _pos++;
        return true;
    }

    private bool TryName(string word)
    {
        if (Peek().Kind != TokenKind.Name || Peek().Text != word) return false;
        _pos++;
        return true;
    }

    private void ExpectOperator(string op)
    {
        var t = Next();
        if (t.Kind != TokenKind.Operator || t.Text != op) throw new JinjaException($"expected '{op}', found '{t.Text}'", t.Line);
    }

    private string ExpectName()
    {
        var t = Next();
        return t.Kind == TokenKind.Name ? t.Text : throw new JinjaException($"expected a name, found '{t.Text}'", t.Line);
    }

    private void ExpectEnd()
    {
        var t = Peek();
        if (t.Kind != TokenKind.End) throw new JinjaException($"unexpected '{t.Text}'", t.Line);
    }

    public Expr ParseExpression()
    {
        var value = ParseOr();
        if (Peek().Kind == TokenKind.Name && Peek().Text == "if")
        {
            int line = Next().Line;
            var condition = ParseOr();
            Expr? orElse = TryName("else") ? ParseExpression() : null;
            return new ConditionalExpr(condition, value, orElse, line);
        }
        return value;
    }

    // A for loop's iterable: everything but a trailing conditional (its 'if' filters the loop).
    private Expr ParseConditionalFree() => ParseOr();

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Peek().Kind == TokenKind.Name && Peek().Text == "or")
        {
            int line = Next().Line;
            left = new BinaryExpr("or", left, ParseAnd(), line);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Peek().Kind == TokenKind.Name && Peek().Text == "and")
        {
            int line = Next().Line;
            left = new BinaryExpr("and", left, ParseNot(), line);
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (Peek().Kind == TokenKind.Name && Peek().Text == "not")
        {
            int line = Next().Line;
            return new UnaryExpr("not", ParseNot(), line);
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var left = ParseAdd();
        while (true)
        {
            var t = Peek();
            if (t.Kind == TokenKind.Operator && t.Text is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                Next();
                left = new BinaryExpr(t.Text, left, ParseAdd(), t.Line);
            }
            else if (t.Kind == TokenKind.Name && t.Text == "in")
            {
                Next();
                left = new BinaryExpr("in", left, ParseAdd(), t.Line);
            }
            else if (t.Kind == TokenKind.Name && t.Text == "not" && Peek(1).Kind == TokenKind.Name && Peek(1).Text == "in")
            {
                Next();
                Next();
                left = new UnaryExpr("not", new BinaryExpr("in", left, ParseAdd(), t.Line), t.Line);
            }
            else return left;
        }
    }

    private Expr ParseAdd()
    {
        var left = ParseConcat();
        while (Peek().Kind == TokenKind.Operator && Peek().Text is "+" or "-")
        {
            var t = Next();
            left = new BinaryExpr(t.Text, left, ParseConcat(), t.Line);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMul();
        while (Peek().Kind == TokenKind.Operator && Peek().Text == "~")
        {
            var t = Next();
            left = new BinaryExpr("~", left, ParseMul(), t.Line);
        }
        return left;
    }

    private Expr ParseMul()
    {
        var left = ParsePow();
        while (Peek().Kind == TokenKind.Operator && Peek().Text is "*" or "/" or "//" or "%")
        {
            var t = Next();
            left = new BinaryExpr(t.Text, left, ParsePow(), t.Line);
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary();
        while (Peek().Kind == TokenKind.Operator && Peek().Text == "**")
        {
            var t = Next();
            left = new BinaryExpr("**", left, ParseUnary(), t.Line);
        }
        return left;
    }

    private Expr ParseUnary()
    {
        var t = Peek();
        if (t.Kind == TokenKind.Operator && t.Text is "-" or "+")
        {
            Next();
            return ParseFilters(new UnaryExpr(t.Text, ParseUnary(), t.Line));
        }
        return ParseFilters(ParsePostfix(ParsePrimary()));
    }

    private Expr ParseFilters(Expr target)
    {
        while (true)
        {
            if (TryOperator("|"))
            {
                var name = Next();
                if (name.Kind != TokenKind.Name) throw new JinjaException("expected a filter name after '|'", name.Line);
                if (!JinjaFilters.FilterNames.Contains(name.Text)) throw new JinjaException($"the filter '{name.Text}' is not supported", name.Line);
                var (args, kwargs) = Peek().Kind == TokenKind.Operator && Peek().Text == "(" ? ParseCallArgs() : ([], []);
                target = ParsePostfix(new FilterExpr(target, name.Text, args, kwargs, name.Line));
            }
            else if (Peek().Kind == TokenKind.Name && Peek().Text == "is")
            {
                int line = Next().Line;
                bool negated = TryName("not");
                var name = Next();
                if (name.Kind != TokenKind.Name) throw new JinjaException("expected a test name after 'is'", line);
                if (!JinjaFilters.TestNames.Contains(name.Text)) throw new JinjaException($"the test '{name.Text}' is not supported", line);
                var args = new List<Expr>();
                if (Peek().Kind == TokenKind.Operator && Peek().Text == "(") args = ParseCallArgs().Args;
                else if (Peek().Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float || (Peek().Kind == TokenKind.Name && Peek().Text is not ("and" or "or" or "else" or "if" or "is" or "in" or "not")))
                    args.Add(ParsePostfix(ParsePrimary()));
                target = new TestExpr(target, name.Text, args, negated, line);
            }
            else return target;
        }
    }

    private Expr ParsePostfix(Expr target)
    {
        while (true)
        {
            var t = Peek();
            if (t.Kind != TokenKind.Operator) return target;
            if (t.Text == ".")
            {
                Next();
                var name = Next();
                target = name.Kind switch
                {
                    TokenKind.Name => new AttributeExpr(target, name.Text, name.Line),
                    TokenKind.Integer => new IndexExpr(target, new LiteralExpr(name.Value, name.Line), name.Line),
                    _ => throw new JinjaException($"expected an attribute name after '.', found '{name.Text}'", name.Line),
                };
            }
            else if (t.Text == "[")
            {
                Next();
                Expr? start = null, stop = null, step = null;
                bool slice = false;
                if (!(Peek().Kind == TokenKind.Operator && Peek().Text == ":")) start = ParseExpression();
                if (TryOperator(":"))
                {
                    slice = true;
                    if (!(Peek().Kind == TokenKind.Operator && Peek().Text is ":" or "]")) stop = ParseExpression();
                    if (TryOperator(":") && !(Peek().Kind == TokenKind.Operator && Peek().Text == "]")) step = ParseExpression();
                }
                ExpectOperator("]");
                target = slice ? new SliceExpr(target, start, stop, step, t.Line) : new IndexExpr(target, start!, t.Line);
            }
            else if (t.Text == "(")
            {
                var (args, kwargs) = ParseCallArgs();
                target = new CallExpr(target, args, kwargs, t.Line);
            }
            else return target;
        }
    }

    private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseCallArgs()
    {
        ExpectOperator("(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!TryOperator(")"))
        {
            if (args.Count + kwargs.Count > 0) ExpectOperator(",");
            if (TryOperator(")")) break;
            if (Peek().Kind == TokenKind.Name && Peek(1).Kind == TokenKind.Operator && Peek(1).Text == "=")
            {
                string name = Next().Text;
                Next();
                kwargs.Add((name, ParseExpression()));
            }
            else args.Add(ParseExpression());
        }
        return (args, kwargs);
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.String:
                string s = (string)t.Value!;
                while (Peek().Kind == TokenKind.String) s += (string)Next().Value!; // adjacent literals concatenate
                return new LiteralExpr(s, t.Line);
            case TokenKind.Integer or TokenKind.Float:
                return new LiteralExpr(t.Value, t.Line);
            case TokenKind.Name:
                return t.Text switch
                {
                    "true" or "True" => new LiteralExpr(true, t.Line),
                    "false" or "False" => new LiteralExpr(false, t.Line),
                    "none" or "None" => new LiteralExpr(null, t.Line),
                    _ => new NameExpr(t.Text, t.Line),
                };
            case TokenKind.Operator when t.Text == "(":
                var first = ParseExpression();
                if (TryOperator(")")) return first;
                var tuple = new List<Expr> { first };
                while (TryOperator(","))
                {
                    if (Peek().Kind == TokenKind.Operator && Peek().Text == ")") break;
                    tuple.Add(ParseExpression());
                }
                ExpectOperator(")");
                return new ListExpr(tuple, t.Line);
            case TokenKind.Operator when t.Text == "[":
                var items = new List<Expr>();
                while (!TryOperator("]"))
                {
                    if (items.Count > 0) ExpectOperator(",");
                    if (TryOperator("]")) break;
                    items.Add(ParseExpression());
                }
                return new ListExpr(items, t.Line);
            case TokenKind.Operator when t.Text == "{":
                var pairs = new List<(Expr, Expr)>();
                while (!TryOperator("}"))
                {
                    if (pairs.Count > 0) ExpectOperator(",");
                    if (TryOperator("}")) break;
                    var key = ParseExpression();
                    ExpectOperator(":");
                    pairs.Add((key, ParseExpression()));
                }
                return new DictExpr(pairs, t.Line);
            default:
                throw new JinjaException(t.Kind == TokenKind.End ? "expression ends too early" : $"unexpected '{t.Text}'", t.Line);
        }
    }
}
