using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.FineTuning.Templates;

/// <summary>A name or key that does not exist: prints as nothing, is false, iterates as empty (Jinja2's default Undefined).</summary>
internal sealed class Undefined(string name)
{
    public string Name { get; } = name;
}

/// <summary>What <c>namespace(...)</c> makes: a mutable object whose attributes <c>{% set ns.x = ... %}</c> changes from inside loops.</summary>
internal sealed class JinjaNamespace : Dictionary<string, object?>
{
    public JinjaNamespace() : base(StringComparer.Ordinal) { }
}

/// <summary>A function a template can call (macros, globals, bound methods).</summary>
internal delegate object? JinjaCallable(List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>
/// The template values and Python's semantics for them: strings, 64-bit integers, doubles, booleans, None (null),
/// lists (<see cref="List{T}"/>) and dicts (<see cref="OrderedDictionary{TKey,TValue}"/>, insertion order kept as in
/// Python). Conversion from JSON, truthiness, equality, <c>str()</c> and <c>json.dumps</c> (what transformers' tojson
/// calls: no ASCII escaping, ", " and ": " separators) live here.
/// </summary>
internal static class JinjaValues
{
    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null => null,
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.Object => ToDict(e),
        _ => null,
    };

    private static OrderedDictionary<string, object?> ToDict(JsonElement e)
    {
        var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject()) d[p.Name] = FromJson(p.Value);
        return d;
    }

    public static bool IsTrue(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        System.Collections.ICollection c => c.Count > 0,
        _ => true,
    };

    public static bool IsNumber(object? v) => v is long or double || v is bool;

    public static double ToDouble(object? v, int line) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new JinjaException($"expected a number, got {TypeName(v)}", line),
    };

    public static bool AreEqual(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a, 0) == ToDouble(b, 0);
        if (a is string sa && b is string sb) return string.Equals(sa, sb, StringComparison.Ordinal);
        if (a is List<object?> la && b is List<object?> lb) return la.Count == lb.Count && la.Zip(lb).All(p => AreEqual(p.First, p.Second));
        if (a is IDictionary<string, object?> da && b is IDictionary<string, object?> db)
            return da.Count == db.Count && da.All(kv => db.TryGetValue(kv.Key, out var o) && AreEqual(kv.Value, o));
        return ReferenceEquals(a, b);
    }

    public static int Compare(object? a, object? b, int line)
    {
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a, line).CompareTo(ToDouble(b, line));
        if (a is string sa && b is string sb) return string.CompareOrdinal(sa, sb);
        throw new JinjaException($"cannot compare {TypeName(a)} with {TypeName(b)}", line);
    }

    public static string TypeName(object? v) => v switch
    {
        null => "None",
        Undefined u => $"undefined '{u.Name}'",
        string => "str",
        bool => "bool",
        long => "int",
        double => "float",
        List<object?> => "list",
        IDictionary<string, object?> => "dict",
        _ => "function",
    };

    /// <summary>Python's <c>str()</c>: None, True/False, repr of lists and dicts, floats with a decimal point.</summary>
    public static string ToStr(object? v) => v switch
    {
        Undefined => "",
        string s => s,
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        switch (v)
        {
            case null: return "None";
            case Undefined: return "";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case double d: return FloatRepr(d);
            case string s: return "'" + s.Replace("\\", "\\\\").Replace("'", "\\'").Replace("\n", "\\n") + "'";
            case List<object?> list: return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case IDictionary<string, object?> dict: return "{" + string.Join(", ", dict.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            default: return "<function>";
        }
    }

    private static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        return r.Contains('.') || r.Contains('E') ? r.Replace("E+", "e+").Replace("E-", "e-") : r + ".0";
    }

    /// <summary>Python's <c>json.dumps(v, ensure_ascii=False, indent=indent)</c>, keys in insertion order.</summary>
    public static string ToJson(object? v, int? indent, int line)
    {
        var sb = new StringBuilder();
        WriteJson(sb, v, indent, 0, line);
        return sb.ToString();
    }

    private static void WriteJson(StringBuilder sb, object? v, int? indent, int depth, int line)
    {
        void NewLine(int d)
        {
            if (indent is int n) sb.Append('\n').Append(' ', n * d);
        }
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d)); break;
            case string s: JsonString(sb, s); break;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(indent is null ? ", " : ",");
                    NewLine(depth + 1);
                    WriteJson(sb, list[i], indent, depth + 1, line);
                }
                NewLine(depth);
                sb.Append(']');
                break;
            case IDictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                int k = 0;
                foreach (var (key, value) in dict)
                {
                    if (k++ > 0) sb.Append(indent is null ? ", " : ",");
                    NewLine(depth + 1);
                    JsonString(sb, key);
                    sb.Append(": ");
                    WriteJson(sb, value, indent, depth + 1, line);
                }
                NewLine(depth);
                sb.Append('}');
                break;
            default: throw new JinjaException($"tojson: {TypeName(v)} is not JSON serializable", line);
        }
    }

    private static void JsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>The items a for loop or a filter walks: a list, a string's characters, a dict's keys; undefined is empty.</summary>
    public static List<object?> Iterate(object? v, int line) => v switch
    {
        Undefined => [],
        List<object?> list => list,
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
        IDictionary<string, object?> dict => dict.Keys.Select(k => (object?)k).ToList(),
        _ => throw new JinjaException($"{TypeName(v)} is not iterable", line),
    };
}
