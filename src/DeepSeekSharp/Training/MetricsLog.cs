using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using DeepSeekSharp.IO.TensorBoard;

namespace DeepSeekSharp.Training;

/// <summary>
/// Metrics as JSON lines (<c>metrics.jsonl</c>, one object per record) and TensorBoard scalars. JSON has no NaN or
/// infinity, so a non-finite number (a diverging run's loss or gradient norm) is written as <c>null</c>;
/// TensorBoard gets the value itself.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    private static readonly JsonSerializerOptions JsonOptions = new() { Converters = { new FloatNonFiniteAsNull(), new DoubleNonFiniteAsNull() } };

    private readonly StreamWriter _jsonl;
    private readonly EventFileWriter _tb;

    /// <param name="outputDir">the run folder</param>
    /// <param name="continueAfterStep">
    /// a run resumed in this folder from the checkpoint of this step: records past it (written before the previous run
    /// stopped) are dropped from both files and new ones follow, so each file reads as one run; null appends to
    /// whatever is there (the run folder decides whether a previous run's files may be: <see cref="RunFolder"/>)
    /// </param>
    public MetricsLog(string outputDir, long? continueAfterStep = null)
    {
        Directory.CreateDirectory(outputDir);
        JsonlPath = JsonlFile(outputDir);
        if (continueAfterStep is long step) KeepRecordsUpTo(JsonlPath, step);
        _jsonl = new StreamWriter(new FileStream(JsonlPath, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        _tb = new EventFileWriter(TensorBoardFolder(outputDir), continueAfterStep);
    }

    public string JsonlPath { get; }

    public static string JsonlFile(string outputDir) => Path.Combine(outputDir, "metrics.jsonl");

    public static string TensorBoardFolder(string outputDir) => Path.Combine(outputDir, "tensorboard");

    /// <summary>Writes one record; numeric values also go to TensorBoard as <c>{kind}/{key}</c>.</summary>
    public void Write(string kind, long step, IReadOnlyDictionary<string, object> values)
    {
        var record = new Dictionary<string, object> { ["kind"] = kind, ["step"] = step };
        foreach (var (k, v) in values) record[k] = v;
        _jsonl.WriteLine(JsonSerializer.Serialize(record, JsonOptions));
        foreach (var (k, v) in values)
            if (v is float or double or int or long)
                _tb.Scalar($"{kind}/{k}", Convert.ToSingle(v, System.Globalization.CultureInfo.InvariantCulture), step);
        _tb.Flush();
    }

    public void Dispose()
    {
        _jsonl.Dispose();
        _tb.Dispose();
    }

    /// <summary>Rewrites the file with the records of steps ≤ <paramref name="step"/> (a line torn by a kill goes too).</summary>
    private static void KeepRecordsUpTo(string path, long step)
    {
        if (!File.Exists(path)) return;
        var kept = new StringBuilder();
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.TryGetProperty("step", out var s) && s.TryGetInt64(out long at) && at <= step) kept.Append(line).Append('\n');
            }
            catch (JsonException) { }
        }
        IO.AtomicFile.WriteAllText(path, kept.ToString());
    }

    private sealed class FloatNonFiniteAsNull : JsonConverter<float>
    {
        public override float Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Null ? float.NaN : reader.GetSingle();

        public override void Write(Utf8JsonWriter writer, float value, JsonSerializerOptions options)
        {
            if (float.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }

    private sealed class DoubleNonFiniteAsNull : JsonConverter<double>
    {
        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Null ? double.NaN : reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
        {
            if (double.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }
}
