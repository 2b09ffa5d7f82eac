using System.Text;
using System.Text.Json;
using DeepSeekSharp.IO.TensorBoard;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

public class MetricsLogTests
{
    [Fact]
    public void NonFiniteMetricsAreWrittenAsNull()
    {
        string dir = TestPaths.TempDir();
        using (var log = new MetricsLog(dir))
            log.Write("train", 7, new Dictionary<string, object>
            {
                ["loss"] = float.NaN, ["grad_norm"] = float.PositiveInfinity, ["elapsed_s"] = double.NegativeInfinity,
                ["lr"] = 1e-3f, ["per_layer"] = new[] { 1f, float.NaN },
            });
        var line = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Single();
        using var doc = JsonDocument.Parse(line);
        var r = doc.RootElement;
        Assert.Equal(7, r.GetProperty("step").GetInt64());
        Assert.Equal(JsonValueKind.Null, r.GetProperty("loss").ValueKind);
        Assert.Equal(JsonValueKind.Null, r.GetProperty("grad_norm").ValueKind);
        Assert.Equal(JsonValueKind.Null, r.GetProperty("elapsed_s").ValueKind);
        Assert.Equal(1e-3, r.GetProperty("lr").GetDouble(), 6);
        Assert.Equal([JsonValueKind.Number, JsonValueKind.Null], r.GetProperty("per_layer").EnumerateArray().Select(v => v.ValueKind));
    }

    [Fact]
    public void AContinuedLogKeepsTheRecordsUpToItsStepInOneFileEach()
    {
        string dir = TestPaths.TempDir();
        using (var log = new MetricsLog(dir))
            for (int step = 1; step <= 5; step++) log.Write("train", step, new Dictionary<string, object> { ["loss"] = 10f - step });
        File.AppendAllText(Path.Combine(dir, "metrics.jsonl"), "{\"kind\": \"train\", \"st"); // torn by a kill
        string tb = Path.Combine(dir, "tensorboard");
        using (var other = new EventFileWriter(Path.Combine(dir, "other"))) other.Scalar("train/loss", 1f, 2);
        File.Move(Directory.GetFiles(Path.Combine(dir, "other")).Single(), Path.Combine(tb, "events.out.tfevents.9999999999.other")); // a second file, as a rerun used to add

        using (var log = new MetricsLog(dir, continueAfterStep: 3))
            log.Write("train", 4, new Dictionary<string, object> { ["loss"] = 0.5f });

        var steps = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64());
        Assert.Equal([1L, 2, 3, 4], steps);
        var file = Assert.Single(Directory.GetFiles(tb));
        var text = Encoding.Latin1.GetString(File.ReadAllBytes(file));
        Assert.Equal(5, text.Split("train/loss").Length - 1); // steps 1, 2, 3 of the first file, step 2 of the second, the new 4
        Assert.Equal(1, text.Split("brain.Event:2").Length - 1); // one file_version header
    }
}
