namespace DeepSeekSharp.Rl.Rewards;

/// <summary>One completion to score: its prompt, the text the policy wrote, and the dataset's reference answer (if any).</summary>
public sealed record RewardInput(string Prompt, string Completion, string? Answer);

/// <summary>
/// A reward function (TRL's <c>reward_funcs</c>): a score for one completion, or null when it does not apply to this
/// item (skipped, counted in the metrics, and left out of that function's mean, as TRL does with None). Implement it
/// in any .NET assembly and name it in the config as <c>MyAssembly.dll:My.Namespace.MyReward</c>.
/// </summary>
public interface IRewardFunction
{
    /// <summary>The name metrics use (<c>rewards/&lt;name&gt;/mean</c>).</summary>
    string Name { get; }

    float? Score(RewardInput input);
}
