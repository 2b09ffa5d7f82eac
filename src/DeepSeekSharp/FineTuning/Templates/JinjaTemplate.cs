using System.Text;

namespace DeepSeekSharp.FineTuning.Templates;

/// <summary>
/// A Jinja2 template of the kind Hugging Face chat templates are written in, parsed once and rendered with
/// transformers' environment (trim_blocks, lstrip_blocks, loop controls, <c>raise_exception</c>, <c>tojson</c>,
/// <c>strftime_now</c>). Supported: text, <c>{{ }}</c>, comments, whitespace control, if/elif/else, for (with
/// <c>loop.*</c>, filters, else, unpacking, break/continue), set (also <c>ns.attr</c> and blocks), macros,
/// <c>{% generation %}</c>, Python-style expressions with their string/list/dict methods, and the filters and tests real
/// chat templates use (see <see cref="JinjaFilters"/>). Anything else is a <see cref="JinjaException"/> naming the line,
/// never a silently different rendering.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Node> _body;

    private JinjaTemplate(List<Node> body) { _body = body; }

    /// <exception cref="JinjaException">the template uses syntax outside the supported subset</exception>
    public static JinjaTemplate Parse(string source)
    {
        try { return new(JinjaParser.Parse(source)); }
        catch (Exception e) when (e is FormatException or OverflowException) { throw new JinjaException($"bad literal ({e.Message})", 0); }
    }

    /// <summary>Renders with <paramref name="variables"/> (values from <see cref="FromJson"/> or plain strings, longs, bools, lists).</summary>
    /// <exception cref="JinjaException">a runtime error, or the template's own <c>raise_exception</c></exception>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var globals = new Scope(null);
        foreach (var (name, value) in JinjaFilters.Globals()) globals.Vars[name] = value;
        foreach (var (name, value) in variables) globals.Vars[name] = value;
        var output = new StringBuilder();
        new Renderer(output, new CallDepth()).Run(_body, new Scope(globals));
        return output.ToString();
    }

    /// <summary>A template value from JSON (objects keep their key order).</summary>
    public static object? FromJson(System.Text.Json.JsonElement element) => JinjaValues.FromJson(element);

    internal sealed class Scope(Scope? parent)
    {
        public Dictionary<string, object?> Vars { get; } = new(StringComparer.Ordinal);

        public Scope? Parent { get; } = parent;

        public object? Lookup(string name)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s.Vars.TryGetValue(name, out var v)) return v;
            return new Undefined(name);
        }
    }

    private enum Flow { Normal, Break, Continue }

    /// <summary>How deep macro calls are nested in one rendering (shared by the renderers of its macro bodies).</summary>
    private sealed class CallDepth
    {
        public int Value;
    }

    private sealed class Renderer(StringBuilder output, CallDepth depth)
    {
        public Flow Run(List<Node> nodes, Scope scope)
        {
            foreach (var node in nodes)
            {
                var flow = Exec(node, scope);
                if (flow != Flow.Normal) return flow;
            }
            return Flow.Normal;
        }

        // Macros calling macros deeper than this are an error, not a stack overflow.
        private const int MaxCallDepth = 64;

        private Flow Exec(Node node, Scope scope)
        {
            try { return ExecNode(node, scope); }
            catch (Exception e) when (e is InvalidCastException or ArgumentException or IndexOutOfRangeException or FormatException or OverflowException or KeyNotFoundException or NullReferenceException)
            {
                // A value of the wrong kind reached a method or filter (e.g. startswith given a number).
                throw new JinjaException($"cannot evaluate this ({e.Message})", node.Line);
            }
        }

        private Flow ExecNode(Node node, Scope scope)
        {
            switch (node)
            {
                case TextNode t:
                    output.Append(t.Text);
                    return Flow.Normal;
                case OutputNode o:
                    output.Append(JinjaValues.ToStr(Eval(o.Value, scope)));
                    return Flow.Normal;
                case IfNode i:
                    foreach (var (condition, body) in i.Branches)
                        if (JinjaValues.IsTrue(Eval(condition, scope))) return Run(body, scope);
                    return i.Else is null ? Flow.Normal : Run(i.Else, scope);
                case ForNode f:
                    return For(f, scope);
                case SetNode s:
                    Set(s, scope);
                    return Flow.Normal;
                case MacroNode m:
                    scope.Vars[m.Name] = Macro(m, scope);
                    return Flow.Normal;
                case LoopControlNode c:
                    return c.IsBreak ? Flow.Break : Flow.Continue;
                case BlockNode b:
                    return Run(b.Body, scope);
                default:
                    throw new JinjaException("unknown node", node.Line);
            }
        }

        private void Set(SetNode s, Scope scope)
        {
            object? value;
            if (s.Value is not null) value = Eval(s.Value, scope);
            else
            {
                var inner = new StringBuilder();
                new Renderer(inner, depth).Run(s.Body!, scope);
                value = inner.ToString();
            }
            if (s.Attribute is null)
            {
                scope.Vars[s.Name] = value;
                return;
            }
            if (scope.Lookup(s.Name) is not JinjaNamespace ns)
                throw new JinjaException($"cannot set '{s.Name}.{s.Attribute}': '{s.Name}' is not a namespace", s.Line);
            ns[s.Attribute] = value;
        }

        private Flow For(ForNode f, Scope scope)
        {
            var items = JinjaValues.Iterate(Eval(f.Iterable, scope), f.Line);
            if (f.Filter is not null)
            {
                var kept = new List<object?>();
                foreach (var item in items)
                {
                    var probe = new Scope(scope);
                    Bind(f, probe, item);
                    if (JinjaValues.IsTrue(Eval(f.Filter, probe))) kept.Add(item);
                }
                items = kept;
            }
            if (items.Count == 0) return f.Else is null ? Flow.Normal : Run(f.Else, scope);
            for (int i = 0; i < items.Count; i++)
            {
                var body = new Scope(scope);
                Bind(f, body, items[i]);
                body.Vars["loop"] = new OrderedDictionary<string, object?>(StringComparer.Ordinal)
                {
                    ["index"] = (long)(i + 1),
                    ["index0"] = (long)i,
                    ["revindex"] = (long)(items.Count - i),
                    ["revindex0"] = (long)(items.Count - i - 1),
                    ["first"] = i == 0,
                    ["last"] = i == items.Count - 1,
                    ["length"] = (long)items.Count,
                    ["previtem"] = i > 0 ? items[i - 1] : new Undefined("loop.previtem"),
                    ["nextitem"] = i + 1 < items.Count ? items[i + 1] : new Undefined("loop.nextitem"),
                };
                if (Run(f.Body, body) == Flow.Break) break;
            }
            return Flow.Normal;
        }

        private static void Bind(ForNode f, Scope scope, object? item)
        {
            if (f.Targets.Count == 1)
            {
                scope.Vars[f.Targets[0]] = item;
                return;
            }
            if (item is not List<object?> tuple || tuple.Count != f.Targets.Count)
                throw new JinjaException($"cannot unpack {JinjaValues.TypeName(item)} into {f.Targets.Count} names", f.Line);
            for (int k = 0; k < tuple.Count; k++) scope.Vars[f.Targets[k]] = tuple[k];
        }

        private JinjaCallable Macro(MacroNode m, Scope definedIn) => (args, kwargs) =>
        {
            var scope = new Scope(definedIn);
            for (int k = 0; k < m.Parameters.Count; k++)
            {
                var (name, defaultValue) = m.Parameters[k];
                scope.Vars[name] = k < args.Count ? args[k]
                    : kwargs.TryGetValue(name, out var v) ? v
                    : defaultValue is not null ? Eval(defaultValue, definedIn)
                    : new Undefined(name);
            }
            if (depth.Value >= MaxCallDepth) throw new JinjaException($"macro '{m.Name}' calls nest deeper than {MaxCallDepth}", m.Line);
            var inner = new StringBuilder();
            depth.Value++;
            try { new Renderer(inner, depth).Run(m.Body, scope); }
            finally { depth.Value--; }
            return inner.ToString();
        };

        public object? Eval(Expr e, Scope scope)
        {
            switch (e)
            {
                case LiteralExpr l: return l.Value;
                case NameExpr n: return scope.Lookup(n.Name);
                case ListExpr l: return l.Items.Select(x => Eval(x, scope)).ToList();
                case DictExpr d:
                    var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (k, v) in d.Items)
                        dict[Eval(k, scope) as string ?? throw new JinjaException("dict keys must be strings", d.Line)] = Eval(v, scope);
                    return dict;
                case AttributeExpr a: return JinjaFilters.GetAttribute(Eval(a.Target, scope), a.Name, a.Line);
                case IndexExpr i: return JinjaFilters.GetItem(Eval(i.Target, scope), Eval(i.Index, scope), i.Line);
                case SliceExpr s:
                    return JinjaFilters.Slice(Eval(s.Target, scope), s.Start is null ? null : Eval(s.Start, scope),
                        s.Stop is null ? null : Eval(s.Stop, scope), s.Step is null ? null : Eval(s.Step, scope), s.Line);
                case CallExpr c:
                    var target = Eval(c.Target, scope);
                    if (target is not JinjaCallable fn)
                        throw new JinjaException($"{Describe(c.Target)} is {JinjaValues.TypeName(target)}, not a function", c.Line);
                    try { return fn(c.Args.Select(x => Eval(x, scope)).ToList(), Kwargs(c.Kwargs, scope)); }
                    catch (JinjaException ex) when (ex.Line == 0) { throw new JinjaException(ex.Message, c.Line); }
                case FilterExpr f:
                    return JinjaFilters.Filter(f.Name, Eval(f.Target, scope), f.Args.Select(x => Eval(x, scope)).ToList(), Kwargs(f.Kwargs, scope), f.Line);
                case TestExpr t:
                    bool result = JinjaFilters.Test(t.Name, Eval(t.Target, scope), t.Args.Select(x => Eval(x, scope)).ToList(), t.Line);
                    return result != t.Negated;
                case UnaryExpr u:
                    var operand = Eval(u.Operand, scope);
                    return u.Op switch
                    {
                        "not" => !JinjaValues.IsTrue(operand),
                        "-" => operand is long lv ? (object)(-lv) : -JinjaValues.ToDouble(operand, u.Line),
                        _ => operand,
                    };
                case BinaryExpr b:
                    if (b.Op == "and")
                    {
                        var left = Eval(b.Left, scope);
                        return JinjaValues.IsTrue(left) ? Eval(b.Right, scope) : left;
                    }
                    if (b.Op == "or")
                    {
                        var left = Eval(b.Left, scope);
                        return JinjaValues.IsTrue(left) ? left : Eval(b.Right, scope);
                    }
                    return JinjaFilters.Binary(b.Op, Eval(b.Left, scope), Eval(b.Right, scope), b.Line);
                case ConditionalExpr c:
                    return JinjaValues.IsTrue(Eval(c.Condition, scope)) ? Eval(c.Then, scope)
                        : c.Else is null ? new Undefined("else") : Eval(c.Else, scope);
                default:
                    throw new JinjaException("unknown expression", e.Line);
            }
        }

        private Dictionary<string, object?> Kwargs(List<(string Name, Expr Value)> kwargs, Scope scope)
        {
            var d = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (name, value) in kwargs) d[name] = Eval(value, scope);
            return d;
        }

        private static string Describe(Expr e) => e switch
        {
            NameExpr n => $"'{n.Name}'",
            AttributeExpr a => $"'.{a.Name}'",
            _ => "the called value",
        };
    }
}
