using System.Globalization;
using System.Text;

namespace DeepSeekSharp.FineTuning.Templates;

/// <summary>
/// Globals (<c>namespace</c>, <c>range</c>, <c>dict</c>, <c>raise_exception</c>, <c>strftime_now</c>), member access with
/// the Python methods templates call (str: strip/lstrip/rstrip/split/startswith/endswith/upper/lower/title/
/// capitalize/replace/find/count; dict: items/keys/values/get; list: append/index), operators, filters
/// (length/count, trim, tojson, upper, lower, title, capitalize, first, last, join, default/d, string, list, items,
/// reverse, replace, int, float, abs, round, safe, unique, select/reject, selectattr/rejectattr, map, indent, wordcount
/// excluded) and tests (defined, undefined, none, string, number, integer, float, boolean, true, false, mapping,
/// iterable, sequence, callable, equalto/eq/==, ne, in, odd, even, divisibleby, lower, upper).
/// </summary>
internal static class JinjaFilters
{
    /// <summary>The filters <see cref="Filter"/> knows, checked when a template is parsed.</summary>
    public static readonly HashSet<string> FilterNames =
    [
        "length", "count", "trim", "upper", "lower", "title", "capitalize", "string", "safe", "tojson", "first", "last", "join", "default", "d",
        "list", "items", "reverse", "replace", "int", "float", "abs", "round", "unique", "select", "reject", "selectattr", "rejectattr", "map", "indent",
    ];

    /// <summary>The tests <see cref="Test"/> knows, checked when a template is parsed.</summary>
    public static readonly HashSet<string> TestNames =
    [
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false", "mapping", "iterable", "sequence",
        "callable", "equalto", "eq", "==", "sameas", "ne", "!=", "in", "odd", "even", "divisibleby", "lower", "upper",
    ];

    // A template has no business making longer ranges; one of 10^12 would exhaust memory instead of failing.
    private const long MaxRange = 1_000_000;

    public static IEnumerable<(string, object?)> Globals()
    {
        yield return ("namespace", (JinjaCallable)((args, kwargs) =>
        {
            var ns = new JinjaNamespace();
            foreach (var a in args)
                if (a is IDictionary<string, object?> d) foreach (var (k, v) in d) ns[k] = v;
            foreach (var (k, v) in kwargs) ns[k] = v;
            return ns;
        }));
        yield return ("dict", (JinjaCallable)((args, kwargs) =>
        {
            var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (k, v) in kwargs) d[k] = v;
            return d;
        }));
        yield return ("range", (JinjaCallable)((args, _) =>
        {
            long start = 0, stop, step = 1;
            if (args.Count == 1) stop = Long(args[0]);
            else { start = Long(args[0]); stop = Long(args[1]); if (args.Count > 2) step = Long(args[2]); }
            if (step == 0) throw new JinjaException("range() step must not be zero", 0);
            if ((stop - start) / step > MaxRange) throw new JinjaException($"range() of more than {MaxRange} numbers", 0);
            var list = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
            return list;
        }));
        yield return ("raise_exception", (JinjaCallable)((args, _) =>
            throw new JinjaException($"the template raised: {(args.Count > 0 ? JinjaValues.ToStr(args[0]) : "an error")}", 0)));
        yield return ("strftime_now", (JinjaCallable)((args, _) => StrfTime(DateTime.UtcNow, args.Count > 0 ? JinjaValues.ToStr(args[0]) : "%Y-%m-%d")));
    }

    private static long Long(object? v) => v is long l ? l : v is bool b ? (b ? 1 : 0) : throw new JinjaException($"expected an integer, got {JinjaValues.TypeName(v)}", 0);

    private static string StrfTime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            char c = format[++i];
            sb.Append(c switch
            {
                'd' => t.ToString("dd", CultureInfo.InvariantCulture),
                'm' => t.ToString("MM", CultureInfo.InvariantCulture),
                'Y' => t.ToString("yyyy", CultureInfo.InvariantCulture),
                'y' => t.ToString("yy", CultureInfo.InvariantCulture),
                'b' => t.ToString("MMM", CultureInfo.InvariantCulture),
                'B' => t.ToString("MMMM", CultureInfo.InvariantCulture),
                'a' => t.ToString("ddd", CultureInfo.InvariantCulture),
                'A' => t.ToString("dddd", CultureInfo.InvariantCulture),
                'H' => t.ToString("HH", CultureInfo.InvariantCulture),
                'M' => t.ToString("mm", CultureInfo.InvariantCulture),
                'S' => t.ToString("ss", CultureInfo.InvariantCulture),
                '%' => "%",
                _ => throw new JinjaException($"strftime_now: '%{c}' is not supported", 0),
            });
        }
        return sb.ToString();
    }

    public static object? GetAttribute(object? target, string name, int line)
    {
        if (target is Undefined u) throw new JinjaException($"'{u.Name}' is undefined (reading .{name})", line);
        if (target is IDictionary<string, object?> dict)
        {
            // Jinja2 tries the attribute first: a dict's methods win over keys of the same name.
            if (target is not JinjaNamespace && Method(target, name, line) is { } m) return m;
            return dict.TryGetValue(name, out var v) ? v : new Undefined(name);
        }
        return (object?)Method(target, name, line) ?? new Undefined(name);
    }

    public static object? GetItem(object? target, object? index, int line)
    {
        switch (target)
        {
            case Undefined u: throw new JinjaException($"'{u.Name}' is undefined (reading [{JinjaValues.Repr(index)}])", line);
            case IDictionary<string, object?> dict:
                if (index is string key && dict.TryGetValue(key, out var v)) return v;
                return index is string name && target is not JinjaNamespace && Method(target, name, line) is { } m ? m : new Undefined(JinjaValues.ToStr(index));
            case List<object?> list when index is long i:
                long at = i < 0 ? list.Count + i : i;
                return at >= 0 && at < list.Count ? list[(int)at] : new Undefined($"[{i}]");
            case string s when index is long i:
                var runes = s.EnumerateRunes().ToList();
                long ai = i < 0 ? runes.Count + i : i;
                return ai >= 0 && ai < runes.Count ? runes[(int)ai].ToString() : new Undefined($"[{i}]");
            default:
                return index is string attr ? GetAttribute(target, attr, line) : new Undefined(JinjaValues.ToStr(index));
        }
    }

    public static object? Slice(object? target, object? start, object? stop, object? step, int line)
    {
        long st = step is null ? 1 : Long(step);
        if (st == 0) throw new JinjaException("slice step cannot be zero", line);
        List<object?> items = target switch
        {
            List<object?> list => list,
            string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
            _ => throw new JinjaException($"cannot slice {JinjaValues.TypeName(target)}", line),
        };
        long n = items.Count;
        long Clamp(object? v, long def, bool isStart)
        {
            if (v is null) return def;
            long x = Long(v);
            if (x < 0) x += n;
            return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
        }
        long from = Clamp(start, st > 0 ? 0 : n - 1, true), to = Clamp(stop, st > 0 ? n : -1, false);
        var result = new List<object?>();
        for (long i = from; st > 0 ? i < to : i > to; i += st) result.Add(items[(int)i]);
        return target is string ? string.Concat(result.Select(x => (string)x!)) : result;
    }

    /// <summary>A bound method of a string, dict or list, or null when there is none of that name.</summary>
    private static JinjaCallable? Method(object? target, string name, int line)
    {
        string Arg(List<object?> a, int i, string def) =>
            a.Count <= i || a[i] is null ? def : a[i] as string ?? throw new JinjaException($"{name}() expects a string, got {JinjaValues.TypeName(a[i])}", line);
        switch (target)
        {
            case string s:
                return name switch
                {
                    "strip" => (a, _) => a.Count > 0 && a[0] is string c ? s.Trim(c.ToCharArray()) : s.Trim(),
                    "lstrip" => (a, _) => a.Count > 0 && a[0] is string c ? s.TrimStart(c.ToCharArray()) : s.TrimStart(),
                    "rstrip" => (a, _) => a.Count > 0 && a[0] is string c ? s.TrimEnd(c.ToCharArray()) : s.TrimEnd(),
                    "upper" => (_, _) => s.ToUpperInvariant(),
                    "lower" => (_, _) => s.ToLowerInvariant(),
                    "title" => (_, _) => Title(s),
                    "capitalize" => (_, _) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
                    "startswith" => (a, _) => a.Count > 0 && a[0] is List<object?> l ? l.Any(p => s.StartsWith((string)p!, StringComparison.Ordinal)) : s.StartsWith(Arg(a, 0, ""), StringComparison.Ordinal),
                    "endswith" => (a, _) => a.Count > 0 && a[0] is List<object?> l ? l.Any(p => s.EndsWith((string)p!, StringComparison.Ordinal)) : s.EndsWith(Arg(a, 0, ""), StringComparison.Ordinal),
                    "replace" => (a, _) => s.Replace(Arg(a, 0, ""), Arg(a, 1, ""), StringComparison.Ordinal),
                    "find" => (a, _) => (long)s.IndexOf(Arg(a, 0, ""), StringComparison.Ordinal),
                    "count" => (a, _) => (long)CountOf(s, Arg(a, 0, "")),
                    "split" => (a, _) => Split(s, a.Count > 0 && a[0] is string sep ? sep : null, a.Count > 1 && a[1] is long max ? max : -1),
                    "splitlines" => (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList(),
                    _ => null,
                };
            case IDictionary<string, object?> d:
                return name switch
                {
                    "items" => (_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
                    "keys" => (_, _) => d.Keys.Select(k => (object?)k).ToList(),
                    "values" => (_, _) => d.Values.ToList(),
                    "get" => (a, _) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null,
                    _ => null,
                };
            case List<object?> list:
                return name switch
                {
                    "append" => (a, _) => { list.Add(a.Count > 0 ? a[0] : null); return null; },
                    "index" => (a, _) => (long)list.FindIndex(x => JinjaValues.AreEqual(x, a.Count > 0 ? a[0] : null)),
                    _ => null,
                };
            default:
                return null;
        }
    }

    private static int CountOf(string s, string part)
    {
        if (part.Length == 0) return s.Length + 1;
        int n = 0;
        for (int i = s.IndexOf(part, StringComparison.Ordinal); i >= 0; i = s.IndexOf(part, i + part.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    private static List<object?> Split(string s, string? separator, long max)
    {
        if (separator is not null)
            return (max < 0 ? s.Split(separator) : s.Split(separator, (int)max + 1)).Select(x => (object?)x).ToList();
        var parts = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        return parts.Select(x => (object?)x).ToList();
    }

    private static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool start = true;
        foreach (char c in s)
        {
            sb.Append(start ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            start = !char.IsLetter(c);
        }
        return sb.ToString();
    }

    public static object? Binary(string op, object? a, object? b, int line)
    {
        switch (op)
        {
            case "==": return JinjaValues.AreEqual(a, b);
            case "!=": return !JinjaValues.AreEqual(a, b);
            case "<": return JinjaValues.Compare(a, b, line) < 0;
            case ">": return JinjaValues.Compare(a, b, line) > 0;
            case "<=": return JinjaValues.Compare(a, b, line) <= 0;
            case ">=": return JinjaValues.Compare(a, b, line) >= 0;
            case "~": return JinjaValues.ToStr(a) + JinjaValues.ToStr(b);
            case "in":
                return b switch
                {
                    string s when a is string part => s.Contains(part, StringComparison.Ordinal),
                    List<object?> list => list.Any(x => JinjaValues.AreEqual(x, a)),
                    IDictionary<string, object?> d => a is string k && d.ContainsKey(k),
                    Undefined u => throw new JinjaException($"'{u.Name}' is undefined (testing 'in')", line),
                    _ => throw new JinjaException($"'in' needs a string, list or dict on the right, got {JinjaValues.TypeName(b)}", line),
                };
        }
        if (a is Undefined ua) throw new JinjaException($"'{ua.Name}' is undefined (in '{op}')", line);
        if (b is Undefined ub) throw new JinjaException($"'{ub.Name}' is undefined (in '{op}')", line);
        if (op == "+" && a is string sa && b is string sb) return sa + sb;
        if (op == "+" && a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
        if (op == "*" && a is string rep && b is long times) return string.Concat(Enumerable.Repeat(rep, (int)Math.Max(0, times)));
        if (!JinjaValues.IsNumber(a) || !JinjaValues.IsNumber(b))
            throw new JinjaException($"unsupported operand types for {op}: {JinjaValues.TypeName(a)} and {JinjaValues.TypeName(b)}", line);
        if (a is long or bool && b is long or bool && op is "+" or "-" or "*" or "//" or "%" or "**")
        {
            long x = Long(a), y = Long(b);
            if ((op is "//" or "%") && y == 0) throw new JinjaException("integer division or modulo by zero", line);
            return op switch
            {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "//" => (long)Math.Floor((double)x / y),
                "%" => ((x % y) + y) % y,
                _ => (long)Math.Pow(x, y),
            };
        }
        double dx = JinjaValues.ToDouble(a, line), dy = JinjaValues.ToDouble(b, line);
        if (op is "/" or "//" or "%" && dy == 0) throw new JinjaException("division by zero", line);
        return op switch
        {
            "+" => dx + dy,
            "-" => dx - dy,
            "*" => dx * dy,
            "/" => dx / dy,
            "//" => Math.Floor(dx / dy),
            "%" => dx - dy * Math.Floor(dx / dy),
            _ => Math.Pow(dx, dy),
        };
    }

    public static object? Filter(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs, int line)
    {
        object? Arg(int i, string key, object? def) => args.Count > i ? args[i] : kwargs.TryGetValue(key, out var v) ? v : def;
        switch (name)
        {
            case "length" or "count":
                return value switch
                {
                    string s => (long)s.EnumerateRunes().Count(),
                    System.Collections.ICollection c => (long)c.Count,
                    Undefined => 0L,
                    _ => throw new JinjaException($"{JinjaValues.TypeName(value)} has no length", line),
                };
            case "trim": return JinjaValues.ToStr(value).Trim();
            case "upper": return JinjaValues.ToStr(value).ToUpperInvariant();
            case "lower": return JinjaValues.ToStr(value).ToLowerInvariant();
            case "title": return Title(JinjaValues.ToStr(value));
            case "capitalize": { var s = JinjaValues.ToStr(value); return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(); }
            case "string": return JinjaValues.ToStr(value);
            case "safe": return value;
            case "tojson":
                return JinjaValues.ToJson(value, Arg(0, "indent", null) is long ind ? (int)ind : null, line);
            case "first": { var items = JinjaValues.Iterate(value, line); return items.Count > 0 ? items[0] : new Undefined("first"); }
            case "last": { var items = JinjaValues.Iterate(value, line); return items.Count > 0 ? items[^1] : new Undefined("last"); }
            case "join":
                return string.Join(JinjaValues.ToStr(Arg(0, "d", "")), JinjaValues.Iterate(value, line).Select(x =>
                    Arg(1, "attribute", null) is string attr ? JinjaValues.ToStr(GetAttribute(x, attr, line)) : JinjaValues.ToStr(x)));
            case "default" or "d":
                bool boolean = JinjaValues.IsTrue(Arg(1, "boolean", false));
                return value is Undefined || (boolean && !JinjaValues.IsTrue(value)) ? Arg(0, "default_value", "") : value;
            case "list": return JinjaValues.Iterate(value, line).ToList();
            case "items":
                return value is IDictionary<string, object?> d ? d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()
                    : value is Undefined ? new List<object?>() : throw new JinjaException($"items: {JinjaValues.TypeName(value)} is not a dict", line);
            case "reverse":
                if (value is string rs) return string.Concat(rs.EnumerateRunes().Reverse().Select(r => r.ToString()));
                return Enumerable.Reverse(JinjaValues.Iterate(value, line)).ToList();
            case "replace": return JinjaValues.ToStr(value).Replace(JinjaValues.ToStr(Arg(0, "old", "")), JinjaValues.ToStr(Arg(1, "new", "")), StringComparison.Ordinal);
            case "int":
                return value switch
                {
                    long l => l,
                    double dv => (long)Math.Truncate(dv),
                    bool b => b ? 1L : 0L,
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long p) => p,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return value switch
                {
                    long l => (double)l,
                    double dv => dv,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double p) => p,
                    _ => Arg(0, "default", 0.0),
                };
            case "abs": return value is long al ? (object)Math.Abs(al) : Math.Abs(JinjaValues.ToDouble(value, line));
            case "round":
                double digits = Arg(0, "precision", 0L) is long pr ? pr : 0;
                return Math.Round(JinjaValues.ToDouble(value, line), (int)digits, MidpointRounding.ToEven);
            case "unique":
                var unique = new List<object?>();
                foreach (var x in JinjaValues.Iterate(value, line)) if (!unique.Any(u => JinjaValues.AreEqual(u, x))) unique.Add(x);
                return unique;
            case "select" or "reject":
                return JinjaValues.Iterate(value, line).Where(x =>
                    (args.Count == 0 ? JinjaValues.IsTrue(x) : Test(JinjaValues.ToStr(args[0]), x, args.Skip(1).ToList(), line)) == (name == "select")).ToList();
            case "selectattr" or "rejectattr":
                if (args.Count == 0) throw new JinjaException($"{name} needs an attribute name", line);
                string selAttr = JinjaValues.ToStr(args[0]);
                return JinjaValues.Iterate(value, line).Where(x =>
                {
                    var v = GetItemOrUndefined(x, selAttr, line);
                    bool ok = args.Count == 1 ? JinjaValues.IsTrue(v) : Test(JinjaValues.ToStr(args[1]), v, args.Skip(2).ToList(), line);
                    return ok == (name == "selectattr");
                }).ToList();
            case "map":
                if (kwargs.TryGetValue("attribute", out var mapAttr))
                    return JinjaValues.Iterate(value, line).Select(x =>
                    {
                        var v = GetItemOrUndefined(x, JinjaValues.ToStr(mapAttr), line);
                        return v is Undefined && kwargs.TryGetValue("default", out var def) ? def : v;
                    }).ToList();
                if (args.Count == 0) throw new JinjaException("map needs a filter name or attribute=", line);
                return JinjaValues.Iterate(value, line).Select(x => Filter(JinjaValues.ToStr(args[0]), x, args.Skip(1).ToList(), [], line)).ToList();
            case "indent":
                long width = Arg(0, "width", 4L) is long w ? w : 4;
                bool indentFirst = JinjaValues.IsTrue(Arg(1, "first", false));
                string pad = new(' ', (int)width);
                var lines = JinjaValues.ToStr(value).Split('\n');
                for (int i = 0; i < lines.Length; i++)
                    if ((i > 0 || indentFirst) && lines[i].Length > 0) lines[i] = pad + lines[i];
                return string.Join('\n', lines);
            default:
                throw new JinjaException($"the filter '{name}' is not supported", line);
        }
    }

    private static object? GetItemOrUndefined(object? x, string attribute, int line)
    {
        object? v = x;
        foreach (var part in attribute.Split('.'))
        {
            if (v is Undefined) return v;
            v = GetItem(v, part, line);
        }
        return v;
    }

    public static bool Test(string name, object? value, List<object?> args, int line)
    {
        object? Arg0() => args.Count > 0 ? args[0] : throw new JinjaException($"the test '{name}' needs an argument", line);
        return name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "string" => value is string,
            "number" => value is long or double,
            "integer" => value is long,
            "float" => value is double,
            "boolean" => value is bool,
            "true" => value is true,
            "false" => value is false,
            "mapping" => value is IDictionary<string, object?>,
            "iterable" => value is string or List<object?> or IDictionary<string, object?>,
            "sequence" => value is string or List<object?> or IDictionary<string, object?>,
            "callable" => value is JinjaCallable,
            "equalto" or "eq" or "==" or "sameas" => JinjaValues.AreEqual(value, Arg0()),
            "ne" or "!=" => !JinjaValues.AreEqual(value, Arg0()),
            "in" => (bool)Binary("in", value, Arg0(), line)!,
            "odd" => value is long o && o % 2 != 0,
            "even" => value is long ev && ev % 2 == 0,
            "divisibleby" => value is long dv && Arg0() is long by && by != 0 && dv % by == 0,
            "lower" => value is string ls && ls == ls.ToLowerInvariant(),
            "upper" => value is string us && us == us.ToUpperInvariant(),
            _ => throw new JinjaException($"the test '{name}' is not supported", line),
        };
    }
}
