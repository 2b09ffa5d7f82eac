using System.Security.Cryptography;
using System.Text.Json;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary>
/// <c>dss train</c> data parallel on real ranks (<c>mpirun</c>): a plain process with 4 micro-batches per step, 2 ranks
/// with 2 and 4 ranks with 1 train the same global batches in the same order, so their checkpoints (weights, routing
/// biases, AdamW moments) and every logged step are bit for bit the same, with ZeRO-1 on or off, across a resume and
/// across a resume on a different number of ranks. Gradient clipping is active in every step (the global norm feeds
/// the update) and bias balancing moves the routing biases (the global expert counts feed it).
/// </summary>
public sealed class DataParallelTrainingTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    // Compared: everything a step logs except wall-clock figures.
    private static readonly string[] StepKeys = ["step", "tokens", "trained_tokens", "loss", "total_loss", "mtp_loss", "balance_loss", "lr", "grad_norm", "max_vio", "max_vio_per_layer"];
    private static readonly string[] EvalKeys = ["step", "val_loss", "val_max_vio_per_layer", "expert_load_per_layer", "sample"];

    private string PretrainingConfig()
    {
        string corpus = Path.Combine(_dir, "corpus.txt");
        var rng = new Random(3);
        var words = new[] { "the", "king", "speaks", "of", "war", "and", "peace", "to", "his", "court", "while", "rain", "falls" };
        File.WriteAllText(corpus, string.Join(' ', Enumerable.Range(0, 6000).Select(_ => words[rng.Next(words.Length)])));
        return Write("pretraining.yaml", $"""
            model_preset: tiny-v3
            datasets:
              - path: {corpus}
            sequence_len: 32
            micro_batch_size: 2
            max_steps: 4
            warmup_steps: 1
            learning_rate: 3e-3
            max_grad_norm: 0.05
            eval_steps: 2
            eval_batches: 1
            sample_tokens: 4
            save_steps: 2
            logging_steps: 1
            seed: 7
            threads: 1
            """);
    }

    private string FineTuningConfig()
    {
        string data = Path.Combine(_dir, "qa.jsonl");
        var rng = new Random(11);
        File.WriteAllLines(data, Enumerable.Range(0, 16).Select(i => JsonSerializer.Serialize(new
        {
            segments = new object[]
            {
                new { text = $"Q{i}: " + new string('a', 3 + rng.Next(25)) + "?\n", label = false },
                new { text = "A: " + string.Concat(Enumerable.Repeat("yes ", 1 + rng.Next(8))) + "\n", label = true },
            },
        })));
        return Write("sft.yaml", $"""
            model_preset: tiny-v3
            tokenizer: byte
            datasets:
              - path: {data}
                type: input_output
            val_set_size: 0
            sequence_len: 64
            micro_batch_size: 1
            max_steps: 2
            warmup_steps: 0
            learning_rate: 1e-3
            max_grad_norm: 0.05
            eval_steps: 1000
            eval_batches: 0
            sample_tokens: 0
            save_steps: 2
            logging_steps: 1
            seed: 5
            threads: 1
            precision: fp8
            """);
    }

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary><paramref name="ranks"/> 1 is a plain process (no launcher, no MPI library), otherwise mpirun.</summary>
    private static void Train(int ranks, string config, string output, int accumulation, params string[] settings)
    {
        string[] args = ["train", "--config", config, "--output-dir", output, "--set", $"gradient_accumulation_steps={accumulation}",
            .. settings.SelectMany(s => s.StartsWith("--", StringComparison.Ordinal) ? s.Split(' ') : ["--set", s])];
        if (ranks == 1)
        {
            var r = DssProcess.Run(new Dictionary<string, string> { ["DSS_THREADS"] = "1" }, args);
            Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}\n{r.Stdout}\n{r.Stderr}");
            return;
        }
        var job = MpiJob.Launch(ranks, args);
        Assert.True(job.ExitCode == 0, $"exit {job.ExitCode}\n{job.Stdout}\n{job.Stderr}");
        // Rank 0 alone reports.
        Assert.Single(job.Stdout.Split('\n'), l => l.Contains("finished at step") || l.Contains("stopped at step"));
        Assert.Single(job.Stdout.Split('\n'), l => l.Contains($"data parallel over {ranks} rank(s)"));
    }

    private static string Digest(string file) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));

    private static void AssertSameCheckpoint(string expectedRun, string actualRun, long step)
    {
        foreach (string file in (string[])["model.safetensors", "optimizer.safetensors"])
            Assert.True(Digest(Path.Combine(expectedRun, $"checkpoint-{step}", file)) == Digest(Path.Combine(actualRun, $"checkpoint-{step}", file)),
                $"{actualRun}: checkpoint-{step}/{file} differs from {expectedRun}'s");
    }

    /// <summary>The logged records of one kind, reduced to the compared keys (as their JSON text), in order.</summary>
    private static List<string> Records(string run, string kind, string[] keys) =>
        [.. File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(r => r.GetProperty("kind").GetString() == kind)
            .Select(r => string.Join(", ", keys.Select(k => $"{k}={(r.TryGetProperty(k, out var v) ? v.GetRawText() : "-")}")))];

    private static void AssertSameSteps(string expectedRun, string actualRun)
    {
        Assert.Equal(Records(expectedRun, "train", StepKeys), Records(actualRun, "train", StepKeys));
        Assert.Equal(Records(expectedRun, "eval", EvalKeys), Records(actualRun, "eval", EvalKeys));
    }

    /// <summary>Every step clipped (so the global norm decided the update) and the routing biases moved.</summary>
    private static void AssertClippedAndBalanced(string run, long lastStep)
    {
        var norms = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(r => r.GetProperty("kind").GetString() == "train").Select(r => r.GetProperty("grad_norm").GetDouble()).ToList();
        Assert.Equal(lastStep, norms.Count);
        Assert.All(norms, n => Assert.True(n > 0.05, $"grad_norm {n} was not clipped at 0.05"));
        using var weights = DeepSeekSharp.IO.SafeTensors.SafeTensorsReader.Open(Path.Combine(run, $"checkpoint-{lastStep}", "model.safetensors"));
        Assert.Contains(weights.ReadFloat32("model.layers.1.mlp.gate.e_score_correction_bias"), b => b != 0);
    }

    [Fact]
    public void OneTwoAndFourRanksTrainTheSameBitsWithAndWithoutZero1()
    {
        string config = PretrainingConfig();
        string one = Path.Combine(_dir, "one"), two = Path.Combine(_dir, "two"), four = Path.Combine(_dir, "four");
        Train(1, config, one, accumulation: 4);
        Train(2, config, two, accumulation: 2);
        Train(4, config, four, accumulation: 1, "zero_stage=1");

        AssertClippedAndBalanced(one, 4);
        foreach (string run in (string[])[two, four])
        {
            AssertSameCheckpoint(one, run, 2);
            AssertSameCheckpoint(one, run, 4);
            AssertSameSteps(one, run);
        }
        // Only rank 0 wrote: one metrics file with one line per step and eval.
        Assert.Equal(4 + 2, File.ReadLines(Path.Combine(four, "metrics.jsonl")).Count());
    }

    [Fact]
    public void AZero1RunOnTwoRanksResumesExactlyOnTwoRanksAndOnOneProcess()
    {
        string config = PretrainingConfig();
        string straight = Path.Combine(_dir, "straight"), split = Path.Combine(_dir, "split"), moved = Path.Combine(_dir, "moved");
        Train(1, config, straight, accumulation: 4);
        Train(2, config, split, accumulation: 2, "zero_stage=1", "--stop-at-step 2");
        Assert.False(Directory.Exists(Path.Combine(split, "checkpoint-4")));
        // The checkpoint holds whole moments, so the same global batch continues on any number of ranks.
        Directory.CreateDirectory(moved);
        CopyDirectory(Path.Combine(split, "checkpoint-2"), Path.Combine(moved, "checkpoint-2"));

        Train(2, config, split, accumulation: 2, "zero_stage=1", $"--resume {split}");
        Train(1, config, moved, accumulation: 4, $"--resume {moved}");

        AssertClippedAndBalanced(straight, 4);
        AssertSameCheckpoint(straight, split, 4);
        AssertSameCheckpoint(straight, moved, 4);
        Assert.Equal(Records(straight, "train", StepKeys), Records(split, "train", StepKeys));
        Assert.Equal(Records(straight, "train", StepKeys).Skip(2), Records(moved, "train", StepKeys));
    }

    [Fact]
    public void FineTuningLossIsNormalisedByTheGlobalTrainedTokens()
    {
        // The examples' trained lengths differ a lot, so a rank dividing by its own trained tokens would change the step.
        // FP8 GEMMs and BF16 AdamW moments (sharded by ZeRO-1 on the two ranks) keep the bits too.
        string config = FineTuningConfig();
        string one = Path.Combine(_dir, "one"), two = Path.Combine(_dir, "two");
        Train(1, config, one, accumulation: 4);
        Train(2, config, two, accumulation: 2, "zero_stage=1");
        AssertSameCheckpoint(one, two, 2);
        Assert.Equal(Records(one, "train", StepKeys), Records(two, "train", StepKeys));
    }

    [Fact]
    public void ABadConfigEndsEveryRankWithOneErrorLineInsteadOfHanging()
    {
        string missing = Path.Combine(_dir, "missing.txt");
        var job = MpiJob.Launch(2, "train", "--set", "model_preset=tiny-v3", "--set", $"datasets={missing}", "--output-dir", Path.Combine(_dir, "bad"));
        Assert.NotEqual(0, job.ExitCode);
        var errors = job.Stderr.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(errors);
        Assert.All(errors, line => Assert.Matches(@"^error: rank [01] of 2: .*missing\.txt", line));
        Assert.DoesNotContain("finished at step", job.Stdout);
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }
}
