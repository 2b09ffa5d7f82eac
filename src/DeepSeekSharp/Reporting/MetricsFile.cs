using System.Globalization;
using System.Text.Json;

namespace DeepSeekSharp.Reporting;

/// <summary>One record of metrics.jsonl as the report reads it.</summary>
internal sealed class MetricsRecord(string kind, long step)
{
    public string Kind { get; } = kind;
    public long Step { get; } = step;
    /// <summary>Numbers; NaN where the value was null, a non-finite literal or unreadable (drawn as a gap).</summary>
    public Dictionary<string, double> Scalars { get; } = [];
    /// <summary>Arrays of numbers, e.g. <c>max_vio_per_layer</c> [layers].</summary>
    public Dictionary<string, double[]> Vectors { get; } = [];
    /// <summary>Arrays of arrays, e.g. <c>expert_load_per_layer</c> [layers][experts].</summary>
    public Dictionary<string, double[][]> Matrices { get; } = [];
    /// <summary>Other strings, e.g. the evaluation's <c>sample</c>.</summary>
    public Dictionary<string, string> Texts { get; } = [];
}

/// <summary>
/// A run's <c>metrics.jsonl</c>, read leniently: the report must draw whatever a run left, so a line that is not a
/// JSON object with <c>kind</c> and an integer <c>step</c> (a line cut short by a crash, say) is counted and skipped,
/// and values that are null or non-finite (written as null or as "NaN"/"Infinity" strings) become gaps. When a step
/// appears more than once (a resumed run repeats the steps after its checkpoint), the last record wins.
/// </summary>
internal sealed class MetricsFile
{
    private MetricsFile(IReadOnlyList<MetricsRecord> train, IReadOnlyList<MetricsRecord> eval, int skippedLines)
    {
        Train = train;
        Eval = eval;
        SkippedLines = skippedLines;
    }

    /// <summary><c>train</c> records by ascending step, one per step.</summary>
    public IReadOnlyList<MetricsRecord> Train { get; }

    /// <summary><c>eval</c> records by ascending step, one per step.</summary>
    public IReadOnlyList<MetricsRecord> Eval { get; }

    public int SkippedLines { get; }

    public static MetricsFile Read(string path)
    {
        var train = new SortedDictionary<long, MetricsRecord>();
        var eval = new SortedDictionary<long, MetricsRecord>();
        int skipped = 0;
        // The training run may still be appending: share the file for writing.
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            var record = Parse(line);
            if (record is null) { skipped++; continue; }
            if (record.Kind == "train") train[record.Step] = record;
            else if (record.Kind == "eval") eval[record.Step] = record;
        }
        return new MetricsFile(train.Values.ToList(), eval.Values.ToList(), skipped);
    }

    /// <summary>A record from one line, or null when the line is not one.</summary>
    internal static MetricsRecord? Parse(string line)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException) { return null; }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return null;
            if (!root.TryGetProperty("kind", out var kind) || kind.ValueKind != JsonValueKind.String) return null;
            if (!root.TryGetProperty("step", out var stepElement) || stepElement.ValueKind != JsonValueKind.Number || !stepElement.TryGetInt64(out long step) || step < 0) return null;
            var record = new MetricsRecord(kind.GetString()!, step);
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name is "kind" or "step") continue;
                var v = property.Value;
                switch (v.ValueKind)
                {
                    case JsonValueKind.Number or JsonValueKind.Null:
                        record.Scalars[property.Name] = Number(v);
                        break;
                    case JsonValueKind.String:
                        if (NonFiniteLiteral(v.GetString()!) is double nonFinite) record.Scalars[property.Name] = nonFinite;
                        else record.Texts[property.Name] = v.GetString()!;
                        break;
                    case JsonValueKind.Array when v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Array):
                        record.Matrices[property.Name] = v.EnumerateArray().Select(Vector).ToArray();
                        break;
                    case JsonValueKind.Array:
                        record.Vectors[property.Name] = Vector(v);
                        break;
                }
            }
            return record;
        }
    }

    private static double[] Vector(JsonElement array) => array.EnumerateArray().Select(Number).ToArray();

    private static double Number(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number when e.TryGetDouble(out double d) => d,
        JsonValueKind.String => NonFiniteLiteral(e.GetString()!) ?? double.NaN,
        _ => double.NaN,
    };

    /// <summary>"NaN", "Infinity", "-Infinity" (what .NET writes for named floating-point literals), else null.</summary>
    private static double? NonFiniteLiteral(string s) =>
        s.Length <= 9 && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && !double.IsFinite(d) ? d : null;
}
