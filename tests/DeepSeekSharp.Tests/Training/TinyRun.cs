using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>Training runs of a second or two (tiny-v3 on a random-word corpus) for the run-lifecycle tests.</summary>
internal static class TinyRun
{
    public static string Corpus(string dir)
    {
        string path = Path.Combine(dir, "corpus.txt");
        var rng = new Random(3);
        var words = new[] { "the", "king", "speaks", "of", "war", "and", "peace", "to", "his", "court", "while", "rain", "falls" };
        File.WriteAllText(path, string.Join(' ', Enumerable.Range(0, 6000).Select(_ => words[rng.Next(words.Length)])));
        return path;
    }

    /// <summary>Six steps, a checkpoint every three, a train record every step, no evaluation; later settings win.</summary>
    public static string[] Settings(string corpus, string output, params string[] extra) =>
    [
        $"datasets={corpus}", $"output_dir={output}", "sequence_len=32", "micro_batch_size=2", "max_steps=6", "warmup_steps=1",
        "learning_rate=3e-3", "lr_scheduler=cosine", "eval_steps=1000", "eval_batches=1", "sample_tokens=0", "save_steps=3",
        "logging_steps=1", "seed=7", .. extra,
    ];

    public static TrainResult Train(string[] settings, TrainOptions? options = null, Action<string>? log = null, CancellationToken ct = default) =>
        Trainer.Run(TrainConfig.Load(null, settings), options ?? new TrainOptions(), null, log ?? (_ => { }),
            ct == default ? TestContext.Current.CancellationToken : ct);

    /// <summary>A base model for fine-tuning tests: two steps of pre-training in <paramref name="dir"/>/base; its checkpoint folder.</summary>
    public static string BaseCheckpoint(string dir)
    {
        string baseRun = Path.Combine(dir, "base");
        Train(Settings(Corpus(dir), baseRun, "max_steps=2", "save_steps=2"));
        return Path.Combine(baseRun, "checkpoint-2");
    }

    /// <summary>The same run through the real <c>dss train</c>.</summary>
    public static string[] CliArgs(string[] settings, params string[] extra)
    {
        var args = new List<string> { "train" };
        foreach (var s in settings) { args.Add("--set"); args.Add(s); }
        return [.. args, .. extra];
    }

    /// <summary>The train records of metrics.jsonl as (step, tokens, elapsed_s).</summary>
    public static List<(long Step, long Tokens, double Elapsed)> TrainRecords(string output) =>
        File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
            .Where(r => r.GetProperty("kind").GetString() == "train")
            .Select(r => (r.GetProperty("step").GetInt64(), r.GetProperty("tokens").GetInt64(), r.GetProperty("elapsed_s").GetDouble()))
            .ToList();
}
