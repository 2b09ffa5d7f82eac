using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.IO;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Training;

/// <summary>What a checkpoint records about the run besides the weights and moments.</summary>
/// <param name="GlobalStep">optimizer steps taken (the data position follows from it)</param>
/// <param name="OptimizerStep">AdamW's step count (its bias correction)</param>
/// <param name="Tokens">training tokens seen, for metrics that continue across resumes</param>
/// <param name="ElapsedSeconds">training time so far, for metrics that continue across resumes</param>
public sealed record TrainerState(long GlobalStep, long OptimizerStep, long Tokens = 0, double ElapsedSeconds = 0);

/// <summary>
/// Training checkpoints: <c>OUT/checkpoint-&lt;step&gt;/</c> is a complete HF model folder (config.json +
/// generation_config.json + safetensors, including the routing biases) plus <c>optimizer.safetensors</c> (AdamW
/// moments), <c>trainer_state.json</c> and the tokenizer (tokenizer.json + tokenizer_config.json). A checkpoint is
/// written into a temporary folder, read back and checked (every tensor present and finite), and only then renamed
/// into place (<see cref="AtomicFolder"/>); older checkpoints are pruned after that, so a crash, a signal or a
/// diverged run at any moment of a save leaves the previous checkpoint the latest.
/// </summary>
public static class CheckpointStore
{
    public const string StateFile = "trainer_state.json";
    public const string OptimizerFile = "optimizer.safetensors";

    /// <param name="esft">for an ESFT run: its expert config, recorded in the checkpoint; as an adapter, the weights are an
    /// ESFT adapter folder (expert_cfg.json + the trained tensors, see <see cref="FineTuning.Esft.EsftAdapter"/>)</param>
    /// <param name="lora">for a LoRA run: the weights are a PEFT adapter folder (adapter_config.json +
    /// adapter_model.safetensors, see <see cref="FineTuning.Lora.LoraAdapters"/>) instead of the full model, whose base
    /// stays at <paramref name="baseModel"/></param>
    /// <param name="writeExtra">writes a trainer's own files into the folder being assembled (GRPO's state), before it is checked and renamed</param>
    public static string Save(string outputDir, TrainerState state, DeepSeekModel model, string configJson, AdamW optimizer,
        string? tokenizerFile, string? tokenizerConfigJson, int keep, FineTuning.Lora.LoraSettings? lora = null, string? baseModel = null,
        FineTuning.Esft.EsftCheckpoint? esft = null, Action<string>? writeExtra = null) =>
        Save(outputDir, state, model, configJson, optimizer.State(), tokenizerFile, tokenizerConfigJson, keep, lora, baseModel, esft, writeExtra);

    /// <param name="optimizerState">whole-parameter AdamW moments by name (<see cref="IOptimizer.State"/>; a ZeRO-1 run
    /// gathers them on every rank before rank 0 writes, so the file is the one a single process writes)</param>
    public static string Save(string outputDir, TrainerState state, DeepSeekModel model, string configJson, IEnumerable<(string Name, float[] M, float[] V)> optimizerState,
        string? tokenizerFile, string? tokenizerConfigJson, int keep, FineTuning.Lora.LoraSettings? lora = null, string? baseModel = null,
        FineTuning.Esft.EsftCheckpoint? esft = null, Action<string>? writeExtra = null)
    {
        long step = state.GlobalStep;
        string final = Path.Combine(outputDir, $"checkpoint-{step}");
        var moments = new List<(string, int[], float[])>();
        var shapes = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Shape);
        foreach (var (name, m, v) in optimizerState)
        {
            moments.Add(("m." + name, shapes[name], m));
            moments.Add(("v." + name, shapes[name], v));
        }
        // Only this run writes here (RunFolder), so an existing folder of the same step is this run's own to replace.
        AtomicFolder.Write(final, tmp =>
        {
            if (lora is not null) FineTuning.Lora.LoraAdapters.WriteFiles(model, tmp, lora, baseModel is null ? null : Path.GetFullPath(baseModel));
            else if (esft is { AsAdapter: true }) FineTuning.Esft.EsftAdapter.WriteFiles(model, tmp, esft.Experts);
            else ModelCheckpoint.WriteFiles(model, tmp, configJson: configJson);
            if (esft is { AsAdapter: false }) esft.Experts.Write(Path.Combine(tmp, FineTuning.Esft.EsftTraining.SelectionFile));
            InjectedCrash(step, "model");
            SafeTensorsWriter.WriteFloat32(Path.Combine(tmp, OptimizerFile), moments);
            InjectedCrash(step, "optimizer");
            if (tokenizerFile is not null && File.Exists(tokenizerFile))
            {
                File.Copy(tokenizerFile, Path.Combine(tmp, "tokenizer.json"), true);
                if (tokenizerConfigJson is not null) AtomicFile.WriteAllText(Path.Combine(tmp, "tokenizer_config.json"), tokenizerConfigJson);
            }
            writeExtra?.Invoke(tmp);
            AtomicFile.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(state));
            var weightNames = lora is not null ? FineTuning.Lora.LoraAdapters.AdapterTensors(model).Select(t => t.Name)
                : esft is { AsAdapter: true } ? FineTuning.Esft.EsftAdapter.AdapterTensors(model, esft.Experts).Select(t => t.Name)
                : ModelCheckpoint.StateDict(model).Select(e => e.Name);
            Verify(tmp, weightNames.Concat(moments.Select(m => m.Item1)));
            InjectedCrash(step, "complete");
        }, replace: true);
        InjectedCrash(step, "renamed");
        Prune(outputDir, keep, final);
        InjectedCrash(step, "pruned");
        return final;
    }

    /// <summary>The newest <c>checkpoint-&lt;step&gt;</c> folder in <paramref name="outputDir"/>, or null.</summary>
    public static string? Latest(string outputDir) =>
        Directory.Exists(outputDir) ? All(outputDir).OrderByDescending(c => c.Step).Select(c => c.Dir).FirstOrDefault() : null;

    /// <summary>
    /// Restores the optimizer and returns the run state recorded with the checkpoint. A resume is exact or refused:
    /// a missing trainer_state.json or optimizer.safetensors, or moments missing for a trained parameter, are errors
    /// unless <paramref name="weightsOnly"/>, which keeps only the weights: AdamW starts again from zero moments
    /// (step 0) and the step is the recorded one, or the folder's when trainer_state.json is gone.
    /// </summary>
    public static TrainerState LoadTrainingState(string checkpoint, IOptimizer optimizer, bool weightsOnly = false)
    {
        string statePath = Path.Combine(checkpoint, StateFile), optPath = Path.Combine(checkpoint, OptimizerFile);
        const string Hint = "pass --resume-weights-only to continue from its weights with fresh AdamW moments (not an exact resume)";
        TrainerState? state = null;
        if (File.Exists(statePath))
        {
            try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath)) ?? throw new JsonException("empty"); }
            catch (JsonException e) { throw new DeepSeekSharpException($"{statePath}: invalid trainer state ({e.Message})"); }
        }
        if (weightsOnly) return state is null ? new TrainerState(StepOf(checkpoint), 0) : state with { OptimizerStep = 0 };
        if (state is null) throw new DeepSeekSharpException($"{statePath}: missing, so the step and data position are unknown; {Hint}");
        if (!File.Exists(optPath)) throw new DeepSeekSharpException($"{optPath}: missing, so AdamW's moments are lost; {Hint}");
        var moments = new Dictionary<string, (float[] M, float[] V)>();
        using (var reader = SafeTensorsReader.Open(optPath))
            foreach (var entry in reader.Tensors)
            {
                if (!entry.Name.StartsWith("m.", StringComparison.Ordinal)) continue;
                string name = entry.Name[2..];
                if (!reader.TryGet("v." + name, out _)) throw new DeepSeekSharpException($"{optPath}: 'v.{name}' is missing; {Hint}");
                moments[name] = (reader.ReadFloat32("m." + name), reader.ReadFloat32("v." + name));
            }
        try { optimizer.LoadState(state.OptimizerStep, moments); }
        catch (DeepSeekSharpException e) { throw new DeepSeekSharpException($"{optPath}: {e.Message}; {Hint}"); }
        return state;
    }

    /// <summary>Every <c>checkpoint-&lt;step&gt;</c> folder, complete or not.</summary>
    public static IEnumerable<(long Step, string Dir)> All(string outputDir)
    {
        foreach (var dir in Directory.EnumerateDirectories(outputDir, "checkpoint-*"))
        {
            string suffix = Path.GetFileName(dir)["checkpoint-".Length..];
            if (long.TryParse(suffix, NumberStyles.None, CultureInfo.InvariantCulture, out long step)) yield return (step, dir);
        }
    }

    /// <summary>
    /// Removes what killed runs left in <paramref name="outputDir"/>: temporary checkpoint folders and files of
    /// <see cref="AtomicFolder"/>/<see cref="AtomicFile"/>, and those of earlier versions (<c>.tmp-checkpoint-*</c>, and
    /// <c>checkpoint-N.old-PID</c>, put back when its checkpoint is missing). Call it only while holding the folder.
    /// </summary>
    public static int RemoveLeftovers(string outputDir)
    {
        int removed = AtomicFolder.RemoveLeftovers(outputDir);
        foreach (var dir in Directory.EnumerateDirectories(outputDir, ".tmp-checkpoint-*"))
        {
            Directory.Delete(dir, true);
            removed++;
        }
        foreach (var dir in Directory.EnumerateDirectories(outputDir, "checkpoint-*.old-*"))
        {
            string name = Path.GetFileName(dir), target = Path.Combine(outputDir, name[..name.IndexOf(".old-", StringComparison.Ordinal)]);
            if (!Directory.Exists(target)) Directory.Move(dir, target);
            else
            {
                Directory.Delete(dir, true);
                removed++;
            }
        }
        return removed;
    }

    /// <summary>Reads the written folder back: every expected tensor present, every F32 value finite.</summary>
    private static void Verify(string dir, IEnumerable<string> expected)
    {
        var found = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(dir, "*.safetensors"))
        {
            using var reader = SafeTensorsReader.Open(file);
            foreach (var entry in reader.Tensors)
            {
                found.Add(entry.Name);
                if (entry.DType == Tensors.DType.F32 && !TensorPrimitives.IsFiniteAll(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(reader.GetBytes(entry))))
                    throw new DeepSeekSharpException($"{file}: '{entry.Name}' has non-finite values; the checkpoint was not saved");
            }
        }
        foreach (var name in expected)
            if (!found.Contains(name)) throw new DeepSeekSharpException($"{dir}: '{name}' is missing after writing; the checkpoint was not saved");
    }

    private static void Prune(string outputDir, int keep, string newest)
    {
        if (keep <= 0) return;
        // Only complete checkpoints count and go; anything else is left for a person to look at.
        var complete = All(outputDir).Where(c => File.Exists(Path.Combine(c.Dir, StateFile))).OrderByDescending(c => c.Step).ToList();
        foreach (var (_, dir) in complete.Skip(keep))
            if (dir != newest) AtomicFolder.Delete(dir);
    }

    private static long StepOf(string checkpoint)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(checkpoint));
        return name.StartsWith("checkpoint-", StringComparison.Ordinal)
            && long.TryParse(name["checkpoint-".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out long step)
            ? step : throw new DeepSeekSharpException($"{checkpoint}: not a checkpoint-<step> folder");
    }

    /// <summary>
    /// Fault injection for the crash-safety tests: dies abruptly at one point of a save, as a kill would
    /// (DSS_CRASH_DURING_SAVE_AT_STEP = the step, DSS_CRASH_DURING_SAVE_PHASE = model, optimizer (the default),
    /// complete, renamed or pruned).
    /// </summary>
    private static void InjectedCrash(long step, string phase)
    {
        if (Environment.GetEnvironmentVariable("DSS_CRASH_DURING_SAVE_AT_STEP") != step.ToString(CultureInfo.InvariantCulture)) return;
        if ((Environment.GetEnvironmentVariable("DSS_CRASH_DURING_SAVE_PHASE") ?? "optimizer") == phase)
            Environment.FailFast($"injected crash during checkpoint save ({phase})");
    }
}
