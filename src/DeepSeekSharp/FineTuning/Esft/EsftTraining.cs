using System.Globalization;
using System.Text.RegularExpressions;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>
/// An ESFT training run's parts (config keys <c>esft</c>, or <c>esft_method</c> + <c>esft_p</c>): which experts train,
/// and freezing everything else through <see cref="ParameterFreezing"/> (a frozen parameter has no gradient, no AdamW
/// moments and, in an adapter run, stays in the base's stored precision; a frozen routing bias is not updated).
/// </summary>
public static class EsftTraining
{
    /// <summary>The selection a run records in its output folder, and a full-model checkpoint beside its weights.</summary>
    public const string SelectionFile = "expert_config.json";

    /// <summary>The scores a run with <c>esft_method</c> measured, in its output folder.</summary>
    public const string ScoresFile = "expert_scores.json";

    /// <summary>
    /// The experts this run trains, or null when it is not an ESFT run. A resumed run keeps the selection its
    /// checkpoint recorded; otherwise <c>esft</c> names the config, or <c>esft_method</c> scores the experts on
    /// <c>esft_samples</c> sequences of the training data and selects with <c>esft_p</c>. The selection is checked against
    /// the model and written to the output folder.
    /// </summary>
    public static ExpertConfig? Experts(TrainConfig cfg, DeepSeekModel model, string? resumeFrom, Action<string> log, CancellationToken ct)
    {
        if (cfg.Esft is null && cfg.EsftMethod is null) return null;
        string source;
        ExpertConfig experts;
        if (resumeFrom is not null && RecordedSelection(resumeFrom) is { } recorded)
        {
            (source, experts) = (recorded, ExpertConfig.Read(recorded));
        }
        else if (cfg.Esft is not null)
        {
            (source, experts) = (cfg.Esft, ExpertConfig.Read(cfg.Esft));
        }
        else
        {
            string method = cfg.EsftMethod!;
            double p = cfg.EsftP > 0 ? cfg.EsftP : method == "token" ? 0.2 : 0.1;
            var sequences = ScoringData.FromConfig(cfg, cfg.EsftSamples, model.Config.VocabSize, log, ct);
            log($"esft: scoring the routed experts on {sequences.Count} sequence(s) of the training data");
            var scores = ExpertScorer.Score(model, sequences, ct: ct);
            string scoresPath = Path.Combine(cfg.OutputDir, ScoresFile);
            scores.Write(scoresPath);
            experts = ExpertSelection.Select(scores.Of(method), p);
            source = scoresPath;
            log(string.Create(CultureInfo.InvariantCulture, $"esft: {scores.Tokens:N0} tokens scored ({scoresPath}); {method} scores, p = {p}"));
        }
        experts.Validate(model.Config, source);
        experts.Write(Path.Combine(cfg.OutputDir, SelectionFile));
        return experts;
    }

    /// <summary>The expert config a checkpoint carries: an ESFT adapter's, or a full-model checkpoint's record.</summary>
    public static string? RecordedSelection(string checkpoint) =>
        new[] { EsftAdapter.ConfigFile, SelectionFile }.Select(f => Path.Combine(checkpoint, f)).FirstOrDefault(File.Exists);

    /// <summary>
    /// The regexes over HF names of everything the config trains: the listed routed experts, the shared experts if it
    /// says so, and with non_expert_modules everything that is not an expert (routers and their biases included).
    /// </summary>
    public static List<string> TrainedPatterns(ExpertConfig experts, DeepSeekConfig model)
    {
        var patterns = new List<string>();
        foreach (var (layer, ids) in experts.Experts)
            if (ids.Length > 0)
                patterns.Add($@"^model\.layers\.{layer}\.mlp\.experts\.({string.Join('|', ids)})\.");
        if (experts.SharedExperts && model.NSharedExperts is > 0) patterns.Add(@"\.mlp\.shared_experts\.");
        if (experts.NonExpertModules) patterns.Add(@"^(?!.*\.mlp\.(shared_experts|experts)\.)");
        return patterns;
    }

    /// <summary>A test of whether the config trains a tensor, by HF name.</summary>
    public static Func<string, bool> Trains(ExpertConfig experts, DeepSeekConfig model)
    {
        var regexes = TrainedPatterns(experts, model).Select(p => new Regex(p, RegexOptions.CultureInvariant)).ToList();
        return name => regexes.Any(r => r.IsMatch(name));
    }

    /// <summary>Freezes every parameter and routing bias the config does not train.</summary>
    public static FreezeResult Freeze(DeepSeekModel model, ExpertConfig experts)
    {
        var patterns = TrainedPatterns(experts, model.Config);
        if (patterns.Count == 0) throw new DeepSeekSharpException("esft: the expert config selects no expert and nothing else to train");
        return ParameterFreezing.Apply(model, patterns, []);
    }
}

/// <summary>How an ESFT run's checkpoints are written: its expert config, and whether as an adapter (the trained
/// tensors only) or as the whole model (with the config beside it, <see cref="EsftTraining.SelectionFile"/>).</summary>
public sealed record EsftCheckpoint(ExpertConfig Experts, bool AsAdapter);
