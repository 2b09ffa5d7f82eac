using System.Reflection;
using System.Runtime.Loader;

namespace DeepSeekSharp.Rl.Rewards;

/// <summary>What scoring a batch gave: the weighted total per completion and, per function, its scores (NaN where skipped).</summary>
public sealed record RewardScores(float[] Total, IReadOnlyList<(string Name, float[] Scores)> PerFunction, IReadOnlyList<string> Problems);

/// <summary>
/// The reward functions of a run with their weights (TRL's <c>reward_funcs</c>, <c>reward_weights</c>). The total
/// reward of a completion is Σ_f w_f·r_f over the functions that scored it (TRL's nansum). A function that throws or
/// returns a non-finite number does not stop the run: that item counts as skipped for that function and the problem
/// is reported once per function (<see cref="RewardScores.Problems"/>).
/// </summary>
public sealed class RewardSet
{
    private readonly IRewardFunction[] _functions;
    private readonly float[] _weights;
    private readonly HashSet<string> _reported = [];

    public RewardSet(IReadOnlyList<IRewardFunction> functions, IReadOnlyList<float>? weights = null)
    {
        if (functions.Count == 0) throw new DeepSeekSharpException("reward_funcs: give at least one reward function");
        if (weights is not null && weights.Count != functions.Count)
            throw new DeepSeekSharpException($"reward_weights: {weights.Count} weights for {functions.Count} reward functions");
        _functions = [.. functions];
        _weights = weights is null ? Enumerable.Repeat(1f, functions.Count).ToArray() : [.. weights];
    }

    public IReadOnlyList<IRewardFunction> Functions => _functions;

    /// <summary>
    /// The functions a config names: <c>accuracy</c> (GSM8K's answer rule), <c>last_number</c>, <c>boxed</c>,
    /// <c>format</c> (R1's think-then-answer), <c>regex:PATTERN</c>, or <c>PATH.dll:Namespace.Type</c> (a class with a
    /// public parameterless constructor implementing <see cref="IRewardFunction"/>; a relative path is taken from
    /// <paramref name="baseDir"/>).
    /// </summary>
    public static RewardSet FromNames(IReadOnlyList<string> names, IReadOnlyList<float>? weights, string baseDir)
    {
        var functions = names.Select(name => name switch
        {
            "accuracy" => (IRewardFunction)new NumericAnswerReward(NumericAnswerReward.Rule.Gsm8k),
            "last_number" => new NumericAnswerReward(NumericAnswerReward.Rule.LastNumber),
            "boxed" => new NumericAnswerReward(NumericAnswerReward.Rule.Boxed),
            "format" => new ThinkFormatReward(),
            _ when name.StartsWith("regex:", StringComparison.Ordinal) => new RegexReward(name["regex:".Length..]),
            _ when name.Contains(".dll:", StringComparison.Ordinal) => LoadUserFunction(name, baseDir),
            _ => throw new DeepSeekSharpException(
                $"reward_funcs: unknown reward '{name}' (accuracy, last_number, boxed, format, regex:PATTERN, or PATH.dll:Namespace.Type)"),
        }).ToList();
        return new RewardSet(functions, weights);
    }

    private static IRewardFunction LoadUserFunction(string spec, string baseDir)
    {
        int colon = spec.LastIndexOf(".dll:", StringComparison.Ordinal) + 4;
        string path = Path.GetFullPath(Path.Combine(baseDir, spec[..colon])), typeName = spec[(colon + 1)..];
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: reward assembly not found");
        Assembly assembly;
        try { assembly = AssemblyLoadContext.Default.LoadFromAssemblyPath(path); }
        catch (BadImageFormatException e) { throw new DeepSeekSharpException($"{path}: not a .NET assembly ({e.Message})"); }
        var type = assembly.GetType(typeName) ?? throw new DeepSeekSharpException($"{path}: no type '{typeName}'");
        if (!typeof(IRewardFunction).IsAssignableFrom(type)) throw new DeepSeekSharpException($"{path}: {typeName} does not implement {nameof(IRewardFunction)}");
        try { return (IRewardFunction)Activator.CreateInstance(type)!; }
        catch (Exception e) when (e is MissingMethodException or TargetInvocationException)
        {
            throw new DeepSeekSharpException($"{path}: {typeName} could not be created ({(e.InnerException ?? e).Message})");
        }
    }

    public RewardScores Score(IReadOnlyList<RewardInput> items)
    {
        var total = new float[items.Count];
        var per = new List<(string, float[])>();
        var problems = new List<string>();
        for (int f = 0; f < _functions.Length; f++)
        {
            var function = _functions[f];
            var scores = new float[items.Count];
            for (int i = 0; i < items.Count; i++)
            {
                float? score;
                string? problem = null;
                try
                {
                    score = function.Score(items[i]);
                    if (score is { } s && !float.IsFinite(s)) (score, problem) = (null, $"returned {s}");
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    (score, problem) = (null, $"threw {e.GetType().Name}: {e.Message}");
                }
                if (problem is not null && _reported.Add(function.Name)) problems.Add($"reward '{function.Name}' {problem}; such items are skipped for it (counted in rewards/{function.Name}/skipped)");
                scores[i] = score ?? float.NaN;
                if (score is { } v) total[i] += _weights[f] * v;
            }
            per.Add((function.Name, scores));
        }
        return new RewardScores(total, per, problems);
    }
}
