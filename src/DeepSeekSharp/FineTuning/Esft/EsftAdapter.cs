using DeepSeekSharp.Autograd;
using DeepSeekSharp.IO;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>What loading an ESFT adapter did: its expert config and the tensors it replaced (HF names).</summary>
public sealed record EsftApplyResult(ExpertConfig Experts, IReadOnlyList<string> Tensors, long Elements)
{
    public string Summary => $"ESFT on {Experts.SelectedCount} routed expert(s) in {Experts.Experts.Count(l => l.Value.Length > 0)} layer(s)"
        + (Experts.SharedExperts ? " + shared experts" : "") + (Experts.NonExpertModules ? " + non-expert modules" : "")
        + $": {Tensors.Count} tensor(s), {Elements:N0} weights";
}

/// <summary>
/// ESFT adapter folders, the layout of DeepSeek's released ESFT adapters: <c>expert_cfg.json</c> (the
/// <see cref="ExpertConfig"/>) and safetensors holding exactly the tensors the config trains, under their HF names
/// (<c>model.layers.&lt;l&gt;.mlp.experts.&lt;i&gt;.{gate,up,down}_proj.weight</c>, plus the shared experts or the
/// non-expert modules when it says so). We write one <c>model.safetensors</c> in F32; on reading, every
/// <c>*.safetensors</c> of the folder but a training checkpoint's <c>optimizer.safetensors</c> counts (any dtype;
/// the release's early "layers." names without the "model." prefix too). The base model is not part of the folder.
/// </summary>
public static class EsftAdapter
{
    public const string ConfigFile = "expert_cfg.json";
    public const string WeightsFile = "model.safetensors";

    /// <summary>Whether <paramref name="dir"/> is an ESFT adapter folder (it has expert_cfg.json).</summary>
    public static bool IsAdapterFolder(string dir) => File.Exists(Path.Combine(dir, ConfigFile));

    /// <summary>The tensors of <paramref name="model"/> an adapter for <paramref name="experts"/> holds, in state-dict order.</summary>
    public static List<(string Name, Tensor Tensor)> AdapterTensors(DeepSeekModel model, ExpertConfig experts)
    {
        var trains = EsftTraining.Trains(experts, model.Config);
        return [.. model.NamedParameters().Select(p => (p.Name, (Tensor)p.Parameter)).Concat(model.NamedBuffers()).Where(t => trains(t.Item1))];
    }

    /// <summary>Writes expert_cfg.json and model.safetensors (F32) into <paramref name="dir"/>, a folder being assembled.</summary>
    public static void WriteFiles(DeepSeekModel model, string dir, ExpertConfig experts)
    {
        var tensors = AdapterTensors(model, experts);
        SafeTensorsWriter.WriteFloat32(Path.Combine(dir, WeightsFile), [.. tensors.Select(t => (t.Name, t.Tensor.Shape, t.Tensor.Span.ToArray()))],
            new Dictionary<string, string> { ["format"] = "pt" });
        experts.Write(Path.Combine(dir, ConfigFile));
    }

    /// <summary>
    /// Copies the adapter's tensors into <paramref name="model"/>. A Linear kept compressed (BF16 or FP8 base) whose
    /// weight the adapter replaces gets that weight in fp32 (its compressed copy is dropped). Afterwards exactly the
    /// adapter's parameters require gradients. The config is checked against the model, and every tensor it trains must
    /// be in the files (and nothing else): one error line naming the file.
    /// </summary>
    public static EsftApplyResult Load(DeepSeekModel model, string dir)
    {
        RequireAdapterFolder(dir);
        string configPath = Path.Combine(dir, ConfigFile);
        var experts = ExpertConfig.Read(configPath);
        experts.Validate(model.Config, configPath);
        var expected = AdapterTensors(model, experts).ToDictionary(t => t.Name, t => t.Tensor, StringComparer.Ordinal);
        var linears = model.NamedModules().Where(m => m.Module is Linear).ToDictionary(m => m.Name + ".weight", m => (Linear)m.Module, StringComparer.Ordinal);
        var files = Directory.EnumerateFiles(dir, "*.safetensors").Where(f => Path.GetFileName(f) != Training.CheckpointStore.OptimizerFile).Order().ToList();
        if (files.Count == 0) throw new DeepSeekSharpException($"{dir}: no *.safetensors with the adapter's tensors");
        var loaded = new List<string>();
        long elements = 0;
        using (GradMode.NoGrad())
            foreach (string file in files)
            {
                using var reader = SafeTensorsReader.Open(file);
                foreach (var entry in reader.Tensors)
                {
                    string name = entry.Name.StartsWith("layers.", StringComparison.Ordinal) ? "model." + entry.Name : entry.Name;
                    if (!expected.TryGetValue(name, out var target))
                        throw new DeepSeekSharpException($"{file}: '{entry.Name}' is not a tensor {ConfigFile} trains");
                    if (!entry.Shape.SequenceEqual(target.Shape))
                        throw new DeepSeekSharpException($"{file}: '{entry.Name}' has shape [{string.Join(", ", entry.Shape)}], the model's is [{string.Join(", ", target.Shape)}]");
                    if (linears.TryGetValue(name, out var linear) && linear.InferenceWeight is not null) linear.InferenceWeight = null;
                    if (target.IsMeta) target.Materialize();
                    reader.ReadAsFloat32(entry.Name, target.Span);
                    loaded.Add(name);
                    elements += target.Length;
                }
            }
        var adapted = loaded.ToHashSet(StringComparer.Ordinal);
        foreach (var name in expected.Keys)
            if (!adapted.Contains(name)) throw new DeepSeekSharpException($"{dir}: {ConfigFile} trains '{name}', which no *.safetensors of the folder holds");
        foreach (var (name, p) in model.NamedParameters()) p.RequiresGrad = adapted.Contains(name);
        return new EsftApplyResult(experts, loaded, elements);
    }

    /// <summary>Puts the adapter on <paramref name="model"/> for inference: its tensors replace the base's (trained experts
    /// in fp32 whatever the base's storage), nothing left trainable.</summary>
    public static EsftApplyResult Attach(DeepSeekModel model, string dir)
    {
        var result = Load(model, dir);
        foreach (var (_, p) in model.NamedParameters()) p.RequiresGrad = false;
        return result;
    }

    /// <summary>Checks that <paramref name="dir"/> is a folder with expert_cfg.json; one error line naming what is missing.</summary>
    public static void RequireAdapterFolder(string dir)
    {
        if (File.Exists(dir)) throw new DeepSeekSharpException($"{dir}: is a file; an ESFT adapter is a folder with {ConfigFile} and its safetensors");
        if (!Directory.Exists(dir)) throw new DeepSeekSharpException($"{dir}: adapter folder not found");
        if (!IsAdapterFolder(dir)) throw new DeepSeekSharpException($"{Path.Combine(dir, ConfigFile)}: not found (not an ESFT adapter folder)");
    }
}
