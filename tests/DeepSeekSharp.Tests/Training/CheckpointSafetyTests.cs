using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>Checkpoints that are never lost, never non-finite, and resumes that are exact or refused.</summary>
public class CheckpointSafetyTests
{
    private static void AssertAllFinite(string checkpoint)
    {
        foreach (var file in Directory.GetFiles(checkpoint, "*.safetensors"))
        {
            using var reader = SafeTensorsReader.Open(file);
            foreach (var t in reader.Tensors)
                Assert.True(reader.ReadFloat32(t.Name).All(float.IsFinite), $"{Path.GetFileName(file)}: {t.Name} has non-finite values");
        }
    }

    [Fact]
    public void ADivergingRunKeepsItsLastGoodCheckpointAndNamesTheStep()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        // lr 1e3: the weights blow up within a few updates; a checkpoint every step, only one kept.
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output, "learning_rate=1e3", "warmup_steps=0", "lr_scheduler=constant",
            "max_steps=40", "save_steps=1", "save_total_limit=1");
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(settings));
        Assert.Contains("diverged", e.Message);
        var step = System.Text.RegularExpressions.Regex.Match(e.Message, @"step (\d+) diverged");
        Assert.True(step.Success, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        string? latest = CheckpointStore.Latest(output);
        Assert.NotNull(latest);
        Assert.Equal(Path.Combine(output, $"checkpoint-{long.Parse(step.Groups[1].Value) - 1}"), latest);
        Assert.Contains(latest, e.Message);
        AssertAllFinite(latest);
        var model = ModelCheckpoint.Load(latest);
        Assert.Equal(long.Parse(step.Groups[1].Value) - 1, CheckpointStore.LoadTrainingState(latest, new AdamW(model.NamedParameters())).GlobalStep);
        // The diverging step's train record was written, its NaN/Inf values as null.
        var last = File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).Last(r => r.GetProperty("step").GetInt64() == long.Parse(step.Groups[1].Value));
        Assert.Equal("train", last.GetProperty("kind").GetString());
    }

    [Fact]
    public void AStopRightAfterAPeriodicSaveDoesNotSaveTheStepAgain()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        using var stop = new CancellationTokenSource();
        var saves = new List<string>();
        var result = TinyRun.Train(TinyRun.Settings(TinyRun.Corpus(dir), output), log: line =>
        {
            if (!line.StartsWith("saved ", StringComparison.Ordinal)) return;
            saves.Add(line);
            stop.Cancel(); // as a signal arriving during the periodic save of step 3
        }, ct: stop.Token);
        Assert.True(result.Interrupted);
        Assert.Equal(3, result.FinalStep);
        Assert.Equal([$"saved {Path.Combine(output, "checkpoint-3")}"], saves);
        Assert.Equal(Path.Combine(output, "checkpoint-3"), result.LastCheckpoint);
    }

    [Theory]
    [InlineData("model", 1)]     // weights written into the temporary folder
    [InlineData("optimizer", 1)] // moments written too
    [InlineData("complete", 1)]  // everything written and verified, not yet renamed
    [InlineData("renamed", 2)]   // in place, the previous one not yet pruned
    [InlineData("pruned", 2)]
    public void AKillInAnyWindowOfASaveLeavesACheckpointAndTheNextStartCleansUp(string phase, int expectedStep)
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output, "max_steps=2", "save_steps=1", "save_total_limit=1");
        var crashed = DssProcess.Run(new Dictionary<string, string> { ["DSS_CRASH_DURING_SAVE_AT_STEP"] = "2", ["DSS_CRASH_DURING_SAVE_PHASE"] = phase },
            TinyRun.CliArgs(settings));
        Assert.True(crashed.ExitCode != 0, $"the injected crash did not happen: {crashed.Stdout}");

        string? latest = CheckpointStore.Latest(output);
        Assert.Equal(Path.Combine(output, $"checkpoint-{expectedStep}"), latest);
        var model = ModelCheckpoint.Load(latest!);
        Assert.Equal(expectedStep, CheckpointStore.LoadTrainingState(latest!, new AdamW(model.NamedParameters())).GlobalStep);

        var resumed = TinyRun.Train(settings, new TrainOptions(ResumeDir: output));
        Assert.Equal(2, resumed.FinalStep);
        Assert.Equal(Path.Combine(output, "checkpoint-2"), CheckpointStore.Latest(output));
        var leftovers = Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName).Where(n => n!.StartsWith('.')).ToList();
        Assert.True(leftovers.Count == 0, "left behind: " + string.Join(", ", leftovers));
    }

    [Theory]
    [InlineData(CheckpointStore.OptimizerFile)]
    [InlineData(CheckpointStore.StateFile)]
    public void AResumeThatCannotBeExactIsRefusedWithTheFileNamed(string missing)
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output);
        TinyRun.Train(settings, new TrainOptions(StopAtStep: 3));
        TinyRun.Train(settings, new TrainOptions(StopAtStep: 5, ResumeDir: output)); // checkpoint-5 beside checkpoint-3
        File.Delete(Path.Combine(output, "checkpoint-5", missing));

        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(settings, new TrainOptions(ResumeDir: output)));
        Assert.Contains(Path.Combine(output, "checkpoint-5", missing), e.Message);
        Assert.Contains("--resume-weights-only", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(Path.Combine(output, "checkpoint-6")), "a refused resume must not train");
    }

    [Fact]
    public void MomentsMissingForATrainedWeightAreRefused()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output);
        TinyRun.Train(settings, new TrainOptions(StopAtStep: 3));
        string opt = Path.Combine(output, "checkpoint-3", CheckpointStore.OptimizerFile);
        List<(string, int[], float[])> kept;
        using (var reader = SafeTensorsReader.Open(opt))
            kept = reader.Tensors.Where(t => !t.Name.EndsWith("model.norm.weight", StringComparison.Ordinal))
                .Select(t => (t.Name, t.Shape, reader.ReadFloat32(t.Name))).ToList();
        SafeTensorsWriter.WriteFloat32(opt, kept);
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => TinyRun.Train(settings, new TrainOptions(ResumeDir: output)));
        Assert.Contains("model.norm.weight", e.Message);
        Assert.Contains(opt, e.Message);
    }

    [Fact]
    public void ResumeWeightsOnlyContinuesAndSaysItIsNotExact()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output);
        TinyRun.Train(settings, new TrainOptions(StopAtStep: 3));
        File.Delete(Path.Combine(output, "checkpoint-3", CheckpointStore.OptimizerFile));
        var r = DssProcess.Run(TinyRun.CliArgs(settings, "--resume", output, "--resume-weights-only"));
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        Assert.Contains("zero moments", r.Stdout);
        Assert.Contains("finished at step 6", r.Stdout);
    }

    [Fact]
    public void ResumingAFinishedRunNamesItsFinalCheckpoint()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        var settings = TinyRun.Settings(TinyRun.Corpus(dir), output, "max_steps=3");
        TinyRun.Train(settings);
        var again = TinyRun.Train(settings, new TrainOptions(ResumeDir: output));
        Assert.False(again.Interrupted);
        Assert.Equal(3, again.FinalStep);
        Assert.Equal(Path.Combine(output, "checkpoint-3"), again.LastCheckpoint); // what `dss train` prints as the final checkpoint
    }

    [Fact]
    public void CheckpointsCarryTheTokenizersSpecialIdsAndTheWrittenDtype()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        TinyRun.Train(TinyRun.Settings(TinyRun.Corpus(dir), output, "max_steps=3"));
        string ckpt = Path.Combine(output, "checkpoint-3");
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(ckpt, "config.json")));
        Assert.Equal(256, config.RootElement.GetProperty("bos_token_id").GetInt32()); // the byte tokenizer's BOS and EOS
        Assert.Equal(257, config.RootElement.GetProperty("eos_token_id").GetInt32());
        Assert.Equal("float32", config.RootElement.GetProperty("torch_dtype").GetString());
        using var generation = JsonDocument.Parse(File.ReadAllText(Path.Combine(ckpt, "generation_config.json")));
        Assert.Equal(256, generation.RootElement.GetProperty("bos_token_id").GetInt32());
        Assert.Equal(257, generation.RootElement.GetProperty("eos_token_id").GetInt32());
        // tokenizer_config.json names the same tokens, and the folder's tokenizer resolves them to the same ids.
        using var tokConfig = JsonDocument.Parse(File.ReadAllText(Path.Combine(ckpt, "tokenizer_config.json")));
        Assert.Equal("<｜begin▁of▁sentence｜>", tokConfig.RootElement.GetProperty("bos_token").GetString());
        Assert.False(tokConfig.RootElement.GetProperty("add_bos_token").GetBoolean());
        var tokenizer = DeepSeekSharp.Tokenization.ModelTokenizer.TryLoad(ckpt)!;
        Assert.Equal((256, 257), (tokenizer.BosId, tokenizer.EosId));
    }
}
