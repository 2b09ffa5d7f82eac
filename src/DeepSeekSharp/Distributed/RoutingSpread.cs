namespace DeepSeekSharp.Distributed;

/// <summary>
/// How many places a token's k routed experts live in, under balanced routing: the estimate behind the dispatch and
/// combine volumes of expert parallelism. Model: experts 0..E−1 sit in equal contiguous blocks on the holders (EP ranks,
/// or nodes of ranks); with group-limited (node-limited) routing the E experts form G equal contiguous groups, a token
/// picks <c>topkGroup</c> of them uniformly and then its k experts uniformly among their experts; without it the k
/// experts are uniform over all E. A token is sent once to each holder with at least one of its experts (DeepSeek-V3
/// sends a token once per node and forwards it inside the node).
/// </summary>
public static class RoutingSpread
{
    /// <summary>
    /// Expected number of distinct holders that receive a token, counting the token's own holder (subtract it with
    /// × (holders − 1)/holders: the token's holder is independent of its routing).
    /// </summary>
    /// <param name="experts">E, routed experts per layer</param>
    /// <param name="perToken">k, experts per token</param>
    /// <param name="groups">G, expert groups (1: no group limit)</param>
    /// <param name="groupsPerToken">groups a token may use (G: no group limit)</param>
    /// <param name="holders">blocks the experts are split into (EP ranks, or nodes); must divide E</param>
    public static double ExpectedHolders(int experts, int perToken, int groups, int groupsPerToken, int holders)
    {
        Validate(experts, perToken, groups, groupsPerToken, holders);
        int groupSize = experts / groups, perHolder = experts / holders, pool = groupsPerToken * groupSize;
        double allSubsets = Choose(groups, groupsPerToken), noneOfPool = Choose(pool, perToken);
        double total = 0;
        for (int h = 0; h < holders; h++)
        {
            // The holder's overlap with each group it touches.
            int first = h * perHolder, end = first + perHolder;
            var overlaps = new List<int>();
            for (int g = first / groupSize; g * groupSize < end; g++)
                overlaps.Add(Math.Min(end, (g + 1) * groupSize) - Math.Max(first, g * groupSize));
            int j = overlaps.Count;
            // subsets[m][x]: subsets of the holder's groups with m groups and x of its experts.
            var subsets = new double[j + 1, perHolder + 1];
            subsets[0, 0] = 1;
            foreach (int o in overlaps)
                for (int m = j - 1; m >= 0; m--)
                    for (int x = perHolder - o; x >= 0; x--)
                        subsets[m + 1, x + o] += subsets[m, x];
            for (int m = 0; m <= Math.Min(j, groupsPerToken); m++)
            {
                // A specific set of m of the holder's groups is exactly the chosen part among them with this probability.
                double exactly = Choose(groups - j, groupsPerToken - m) / allSubsets;
                if (exactly == 0) continue;
                for (int x = 1; x <= perHolder; x++)
                    if (subsets[m, x] > 0) total += subsets[m, x] * exactly * (1 - Choose(pool - x, perToken) / noneOfPool);
            }
        }
        return total;
    }

    /// <summary>Expected number of distinct groups a token's experts fall in (nodes, when a group fills a node as in V3).</summary>
    public static double ExpectedGroups(int experts, int perToken, int groups, int groupsPerToken)
    {
        Validate(experts, perToken, groups, groupsPerToken, groups);
        int groupSize = experts / groups, pool = groupsPerToken * groupSize;
        return groupsPerToken * (1 - Choose(pool - groupSize, perToken) / Choose(pool, perToken));
    }

    /// <summary>At most this many distinct holders receive one token.</summary>
    public static int MaxHolders(int experts, int perToken, int groups, int groupsPerToken, int holders)
    {
        Validate(experts, perToken, groups, groupsPerToken, holders);
        int perHolder = experts / holders, groupSize = experts / groups, holdersPerGroup = 0;
        for (int g = 0; g < groups; g++) // a group may straddle holder boundaries
            holdersPerGroup = Math.Max(holdersPerGroup, ((g + 1) * groupSize - 1) / perHolder - g * groupSize / perHolder + 1);
        return Math.Min(perToken, Math.Min(holders, groupsPerToken * holdersPerGroup));
    }

    private static void Validate(int experts, int perToken, int groups, int groupsPerToken, int holders)
    {
        if (experts < 1 || groups < 1 || experts % groups != 0)
            throw new DeepSeekSharpException($"{experts} routed experts cannot form {groups} equal groups");
        if (groupsPerToken < 1 || groupsPerToken > groups)
            throw new DeepSeekSharpException($"topk_group {groupsPerToken} must lie in 1..n_group {groups}");
        if (perToken < 1 || perToken > groupsPerToken * (experts / groups))
            throw new DeepSeekSharpException($"{perToken} experts per token do not fit in {groupsPerToken} groups of {experts / groups}");
        if (holders < 1 || experts % holders != 0)
            throw new DeepSeekSharpException($"{experts} routed experts cannot be split evenly over {holders} expert-parallel ranks (or nodes)");
    }

    /// <summary>C(n, k) in double (0 outside 0 ≤ k ≤ n).</summary>
    internal static double Choose(int n, int k)
    {
        if (k < 0 || n < 0 || k > n) return 0;
        k = Math.Min(k, n - k);
        double c = 1;
        for (int i = 1; i <= k; i++) c = c * (n - k + i) / i;
        return c;
    }
}
