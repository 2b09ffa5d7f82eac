namespace DeepSeekSharp.Rl;

/// <summary>How rewards are scaled into advantages (TRL's <c>scale_rewards</c>).</summary>
public enum RewardScaling
{
    /// <summary>Divide by the standard deviation of the completion's group (DeepSeekMath's GRPO).</summary>
    Group,
    /// <summary>Divide by the standard deviation of the whole batch's rewards.</summary>
    Batch,
    /// <summary>Only subtract the group mean (Dr. GRPO).</summary>
    None,
}

/// <summary>
/// Group-relative advantages: the G completions of one prompt form a group, and Â_i = (r_i − mean(r_group)) /
/// (std + 1e-4), std the unbiased (n − 1) standard deviation of the group (or the batch), as TRL computes it. A group
/// whose rewards all tie gets Â = 0: no learning signal, counted in <see cref="Result.TiedGroups"/>.
/// </summary>
public static class GroupAdvantages
{
    public sealed record Result(float[] Advantages, int TiedGroups);

    /// <param name="rewards">[groups · groupSize], the completions of a group adjacent</param>
    public static Result Compute(ReadOnlySpan<float> rewards, int groupSize, RewardScaling scaling)
    {
        if (groupSize < 2) throw new DeepSeekSharpException($"num_generations must be at least 2: a group of one has no relative advantage (got {groupSize})");
        if (rewards.Length % groupSize != 0)
            throw new DeepSeekSharpException($"{rewards.Length} completions do not split into groups of num_generations = {groupSize}");
        int groups = rewards.Length / groupSize;
        var advantages = new float[rewards.Length];
        double batchStd = scaling == RewardScaling.Batch ? UnbiasedStd(rewards) : 0;
        int tied = 0;
        for (int g = 0; g < groups; g++)
        {
            var group = rewards.Slice(g * groupSize, groupSize);
            double mean = 0;
            foreach (float r in group) mean += r;
            mean /= groupSize;
            double std = scaling switch { RewardScaling.Group => UnbiasedStd(group), RewardScaling.Batch => batchStd, _ => 0 };
            bool allTie = true;
            foreach (float r in group) allTie &= r == group[0];
            if (allTie) tied++;
            for (int i = 0; i < groupSize; i++)
            {
                double centred = group[i] - mean;
                advantages[g * groupSize + i] = (float)(scaling == RewardScaling.None ? centred : centred / (std + 1e-4));
            }
        }
        return new Result(advantages, tied);
    }

    /// <summary>The (n − 1) standard deviation, torch.std's default; 0 for fewer than two values.</summary>
    internal static double UnbiasedStd(ReadOnlySpan<float> x)
    {
        if (x.Length < 2) return 0;
        double mean = 0;
        foreach (float v in x) mean += v;
        mean /= x.Length;
        double ss = 0;
        foreach (float v in x) ss += (v - mean) * (v - mean);
        return Math.Sqrt(ss / (x.Length - 1));
    }
}
