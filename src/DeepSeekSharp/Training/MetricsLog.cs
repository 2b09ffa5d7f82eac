using System.Text.Json;
using DeepSeekSharp.IO.TensorBoard;

namespace DeepSeekSharp.Training;

/// <summary>Metrics as JSON lines (<c>metrics.jsonl</c>, one object per record) and TensorBoard scalars.</summary>
public sealed class MetricsLog : IDisposable
{
    private readonly StreamWriter _jsonl;
    private readonly EventFileWriter _tb;

    public MetricsLog(string outputDir)
    {
        Directory.CreateDirectory(outputDir);
        JsonlPath = Path.Combine(outputDir, "metrics.jsonl");
        _jsonl = new StreamWriter(new FileStream(JsonlPath, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        _tb = new EventFileWriter(Path.Combine(outputDir, "tensorboard"));
    }

    public string JsonlPath { get; }

    /// <summary>Writes one record; numeric values also go to TensorBoard as <c>{kind}/{key}</c>.</summary>
    public void Write(string kind, long step, IReadOnlyDictionary<string, object> values)
    {
        var record = new Dictionary<string, object> { ["kind"] = kind, ["step"] = step };
        foreach (var (k, v) in values) record[k] = v;
        _jsonl.WriteLine(JsonSerializer.Serialize(record));
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
}
