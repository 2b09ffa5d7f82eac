using System.Text.RegularExpressions;
using DeepSeekSharp.Evaluation;

namespace DeepSeekSharp.Rl.Rewards;

/// <summary>
/// 1 when the completion's final answer equals the reference as a number, else 0 (R1's accuracy reward). The answer
/// is read by <paramref name="rule"/>: GSM8K's (the number after the last <c>####</c>, else the last number), the last
/// number, or the content of the last <c>\boxed{…}</c>. The reference is read with GSM8K's rule, so a dataset's
/// full solution ("… #### 72") works as its answer. Items without a reference are skipped (null).
/// </summary>
public sealed partial class NumericAnswerReward(NumericAnswerReward.Rule rule) : IRewardFunction
{
    public enum Rule { Gsm8k, LastNumber, Boxed }

    public string Name => rule switch { Rule.Gsm8k => "accuracy", Rule.LastNumber => "last_number", _ => "boxed" };

    [GeneratedRegex(@"\\boxed\{([^{}]*)\}", RegexOptions.CultureInvariant)]
    private static partial Regex BoxedPattern();

    public float? Score(RewardInput input)
    {
        if (input.Answer is null || Gsm8kAnswer.Value(Gsm8kAnswer.Extract(input.Answer)) is not { } reference) return null;
        string? answer = rule switch
        {
            Rule.Gsm8k => Gsm8kAnswer.Extract(input.Completion),
            Rule.LastNumber => Gsm8kAnswer.Extract(input.Completion.Replace(Gsm8kAnswer.Marker, " ", StringComparison.Ordinal)),
            _ => BoxedPattern().Matches(input.Completion) is { Count: > 0 } m ? Gsm8kAnswer.Extract(m[^1].Groups[1].Value) : null,
        };
        return Gsm8kAnswer.Value(answer) == reference ? 1f : 0f;
    }
}

/// <summary>
/// R1's format reward: 1 when the completion is a reasoning block <c>&lt;think&gt;…&lt;/think&gt;</c> followed by a
/// non-empty answer, else 0.
/// </summary>
public sealed partial class ThinkFormatReward : IRewardFunction
{
    public string Name => "format";

    [GeneratedRegex(@"^\s*<think>.*?</think>\s*\S", RegexOptions.CultureInvariant | RegexOptions.Singleline)]
    private static partial Regex Pattern();

    public float? Score(RewardInput input) => Pattern().IsMatch(input.Completion) ? 1f : 0f;
}

/// <summary>1 when the completion matches a .NET regular expression (searched, not anchored, unless the pattern anchors), else 0.</summary>
public sealed class RegexReward : IRewardFunction
{
    private readonly Regex _pattern;

    public RegexReward(string pattern)
    {
        try { _pattern = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Singleline, TimeSpan.FromSeconds(1)); }
        catch (ArgumentException e) { throw new DeepSeekSharpException($"reward regex '{pattern}' is not a valid regular expression ({e.Message})"); }
        Name = "regex";
    }

    public string Name { get; }

    public float? Score(RewardInput input) => _pattern.IsMatch(input.Completion) ? 1f : 0f;
}
