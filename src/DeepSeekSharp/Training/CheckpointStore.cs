using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;

namespace DeepSeekSharp.Training;

/// <summary>
/// Training checkpoints: <c>OUT/checkpoint-&lt;step&gt;/</c> is a complete HF model folder (config.json + safetensors,
/// including the routing biases) plus <c>optimizer.safetensors</c> (AdamW moments), <c>trainer_state.json</c> and the
/// tokenizer. A checkpoint is written into a temporary folder and renamed into place, so a crash or Ctrl+C during a
/// save never leaves a half-written <c>checkpoint-N</c>: the previous one stays the latest.
/// </summary>
public static class CheckpointStore
{
    public const string StateFile = "trainer_state.json";

    public static string Save(string outputDir, long step, DeepSeekModel model, string configJson, AdamW optimizer, string? tokenizerFile, int keep)
    {
        string final = Path.Combine(outputDir, $"checkpoint-{step}");
        string tmp = Path.Combine(outputDir, $".tmp-checkpoint-{step}-{Environment.ProcessId}");
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        ModelCheckpoint.Save(model, tmp, configJson: configJson);
        var moments = new List<(string, int[], float[])>();
        var shapes = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Shape);
        foreach (var (name, m, v) in optimizer.State())
        {
            moments.Add(("m." + name, shapes[name], m));
            moments.Add(("v." + name, shapes[name], v));
        }
        SafeTensorsWriter.WriteFloat32(Path.Combine(tmp, "optimizer.safetensors"), moments);
        // Fault injection for the crash-safety test: die abruptly in the middle of a save.
        if (Environment.GetEnvironmentVariable("DSS_CRASH_DURING_SAVE_AT_STEP") == step.ToString(CultureInfo.InvariantCulture))
            Environment.FailFast("injected crash during checkpoint save");
        if (tokenizerFile is not null && File.Exists(tokenizerFile)) File.Copy(tokenizerFile, Path.Combine(tmp, "tokenizer.json"), true);
        // The state file is written last: a folder without it is never taken for a checkpoint.
        File.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(new TrainerState(step, optimizer.Step)));
        if (Directory.Exists(final))
        {
            string old = final + $".old-{Environment.ProcessId}";
            Directory.Move(final, old);
            Directory.Move(tmp, final);
            Directory.Delete(old, true);
        }
        else Directory.Move(tmp, final);
        Prune(outputDir, keep);
        return final;
    }

    /// <summary>The newest complete checkpoint folder in <paramref name="outputDir"/>, or null.</summary>
    public static string? Latest(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return null;
        return Completed(outputDir).OrderByDescending(c => c.Step).Select(c => c.Dir).FirstOrDefault();
    }

    /// <summary>Restores the optimizer; returns the step the checkpoint was taken after.</summary>
    public static long LoadTrainingState(string checkpoint, AdamW optimizer)
    {
        string statePath = Path.Combine(checkpoint, StateFile);
        TrainerState state;
        try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new DeepSeekSharpException($"{statePath}: invalid trainer state ({e.Message})"); }
        var moments = new Dictionary<string, (float[] M, float[] V)>();
        string optPath = Path.Combine(checkpoint, "optimizer.safetensors");
        if (File.Exists(optPath))
        {
            using var reader = SafeTensorsReader.Open(optPath);
            foreach (var entry in reader.Tensors)
            {
                if (!entry.Name.StartsWith("m.", StringComparison.Ordinal)) continue;
                string name = entry.Name[2..];
                moments[name] = (reader.ReadFloat32("m." + name), reader.ReadFloat32("v." + name));
            }
        }
        optimizer.LoadState(state.OptimizerStep, moments);
        return state.GlobalStep;
    }

    private static IEnumerable<(long Step, string Dir)> Completed(string outputDir)
    {
        foreach (var dir in Directory.EnumerateDirectories(outputDir, "checkpoint-*"))
        {
            string suffix = Path.GetFileName(dir)["checkpoint-".Length..];
            if (long.TryParse(suffix, NumberStyles.None, CultureInfo.InvariantCulture, out long step) && File.Exists(Path.Combine(dir, StateFile)))
                yield return (step, dir);
        }
    }

    private static void Prune(string outputDir, int keep)
    {
        if (keep <= 0) return;
        foreach (var (_, dir) in Completed(outputDir).OrderByDescending(c => c.Step).Skip(keep).ToList())
            Directory.Delete(dir, true);
    }

    private sealed record TrainerState(long GlobalStep, long OptimizerStep);
}
