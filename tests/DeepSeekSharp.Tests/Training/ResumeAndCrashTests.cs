using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>Exact resume, and checkpoints that survive a crash in the middle of a save.</summary>
public class ResumeAndCrashTests
{
    private static string Corpus(string dir)
    {
        string path = Path.Combine(dir, "corpus.txt");
        var rng = new Random(3);
        var words = new[] { "the", "king", "speaks", "of", "war", "and", "peace", "to", "his", "court", "while", "rain", "falls" };
        File.WriteAllText(path, string.Join(' ', Enumerable.Range(0, 6000).Select(_ => words[rng.Next(words.Length)])));
        return path;
    }

    private static string[] Settings(string corpus, string output, params string[] extra) =>
    [.. extra,
        $"datasets={corpus}", $"output_dir={output}", "sequence_len=32", "micro_batch_size=4", "gradient_accumulation_steps=2",
        "max_steps=6", "warmup_steps=2", "learning_rate=3e-3", "lr_scheduler=cosine", "eval_steps=3", "eval_batches=1",
        "sample_tokens=4", "save_steps=3", "logging_steps=1", "seed=7",
    ];

    [Theory]
    [InlineData("precision=fp32")]
    [InlineData("precision=fp8")] // FP8 GEMMs and BF16 AdamW moments (saved widened, restored exactly)
    public void ResumedRunEndsWithIdenticalWeights(string precision)
    {
        string dir = TestPaths.TempDir();
        string corpus = Corpus(dir);
        string full = Path.Combine(dir, "full"), split = Path.Combine(dir, "split");

        var straight = Trainer.Run(TrainConfig.Load(null, Settings(corpus, full, precision)), new TrainOptions(), null, _ => { }, TestContext.Current.CancellationToken);
        Assert.Equal(6, straight.FinalStep);

        var first = Trainer.Run(TrainConfig.Load(null, Settings(corpus, split, precision)), new TrainOptions(StopAtStep: 3), null, _ => { }, TestContext.Current.CancellationToken);
        Assert.Equal(3, first.FinalStep);
        var resumed = Trainer.Run(TrainConfig.Load(null, Settings(corpus, split, precision)), new TrainOptions(ResumeDir: split), null, _ => { }, TestContext.Current.CancellationToken);
        Assert.Equal(6, resumed.FinalStep);

        using var a = SafeTensorsReader.Open(Path.Combine(full, "checkpoint-6", "model.safetensors"));
        using var b = SafeTensorsReader.Open(Path.Combine(split, "checkpoint-6", "model.safetensors"));
        Assert.Equal(a.Tensors.Select(t => t.Name), b.Tensors.Select(t => t.Name));
        foreach (var t in a.Tensors)
            Assert.True(a.GetBytes(t).SequenceEqual(b.GetBytes(b.Get(t.Name))), $"{t.Name} differs after resume");
        // The routing biases moved (bias balancing is on), so the comparison covers them too.
        var bias = a.ReadFloat32("model.layers.1.mlp.gate.e_score_correction_bias");
        Assert.Contains(bias, x => x != 0);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void CrashDuringSaveLeavesTheLastGoodCheckpoint()
    {
        string dir = TestPaths.TempDir();
        string corpus = Corpus(dir);
        string output = Path.Combine(dir, "run");
        var args = new List<string> { "train" };
        foreach (var s in Settings(corpus, output)) { args.Add("--set"); args.Add(s); }
        var crashed = DssProcess.Run(new Dictionary<string, string> { ["DSS_CRASH_DURING_SAVE_AT_STEP"] = "6" }, args.ToArray());
        Assert.NotEqual(0, crashed.ExitCode);

        Assert.False(Directory.Exists(Path.Combine(output, "checkpoint-6")), "a checkpoint half-written at the crash must not appear");
        string? latest = CheckpointStore.Latest(output);
        Assert.Equal(Path.Combine(output, "checkpoint-3"), latest);
        var model = ModelCheckpoint.Load(latest!);
        var opt = new AdamW(model.NamedParameters());
        Assert.Equal(3, CheckpointStore.LoadTrainingState(latest!, opt).GlobalStep);

        var resumed = DssProcess.Run(args.Concat(["--resume", output]).ToArray());
        Assert.True(resumed.ExitCode == 0, resumed.Stderr + resumed.Stdout);
        Assert.Equal(Path.Combine(output, "checkpoint-6"), CheckpointStore.Latest(output));
        Directory.Delete(dir, true);
    }
}
