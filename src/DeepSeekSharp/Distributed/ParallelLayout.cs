using System.Globalization;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// How a training run is laid out over ranks: world = PipelineParallel × DataParallel × ExpertParallel. Each of the
/// PipelineParallel stages holds a contiguous slice of the layers on DataParallel × ExpertParallel ranks, which split the
/// batch and all hold the stage's dense weights (attention, dense MLPs, shared experts, gates, norms); the routed
/// experts are split over ExpertParallel of them and each expert is replicated DataParallel times. Dense gradients are
/// therefore reduced over DataParallel × ExpertParallel ranks and expert gradients over DataParallel ranks (the
/// expert-data-parallel group); ZeRO-1 shards each optimizer state over the same group. DeepSeek-V3: pp 16, ep 64,
/// dp 2 on 2,048 GPUs.
/// </summary>
public sealed record ParallelLayout(int DataParallel, int ExpertParallel, int PipelineParallel, int ZeroStage)
{
    public int WorldSize => DataParallel * ExpertParallel * PipelineParallel;

    /// <summary>Ranks of one stage: they split the batch and sum the stage's dense gradients.</summary>
    public int DenseDataParallel => DataParallel * ExpertParallel;

    /// <summary>
    /// Parses <c>dp=2,ep=64,pp=16,zero=1</c> (any order, any subset; dp, ep, pp default to 1 and zero to 0).
    /// </summary>
    public static ParallelLayout Parse(string text)
    {
        int dp = 1, ep = 1, pp = 1, zero = 0;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            string key = eq < 0 ? part : part[..eq].Trim().ToLowerInvariant();
            if (eq < 0 || !int.TryParse(part[(eq + 1)..], NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
                throw new DeepSeekSharpException($"--parallel: '{part}' is not key=integer (keys dp, ep, pp, zero)");
            if (!seen.Add(key)) throw new DeepSeekSharpException($"--parallel: {key} is given twice");
            switch (key)
            {
                case "dp": dp = value; break;
                case "ep": ep = value; break;
                case "pp": pp = value; break;
                case "zero": zero = value; break;
                default: throw new DeepSeekSharpException($"--parallel: unknown key '{key}' (keys dp, ep, pp, zero)");
            }
        }
        if (seen.Count == 0) throw new DeepSeekSharpException("--parallel: empty layout (e.g. dp=2,ep=64,pp=16,zero=1)");
        foreach (var (name, value) in (ReadOnlySpan<(string, int)>)[("dp", dp), ("ep", ep), ("pp", pp)])
            if (value < 1) throw new DeepSeekSharpException($"--parallel: {name}={value} must be at least 1");
        if (zero is not (0 or 1)) throw new DeepSeekSharpException($"--parallel: zero={zero} is not a supported ZeRO stage (0 or 1)");
        if ((long)dp * ep * pp > int.MaxValue) throw new DeepSeekSharpException("--parallel: the world size overflows");
        return new ParallelLayout(dp, ep, pp, zero);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"dp={DataParallel},ep={ExpertParallel},pp={PipelineParallel},zero={ZeroStage}");
}
