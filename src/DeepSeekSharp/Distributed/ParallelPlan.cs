using DeepSeekSharp.Fp8;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;

namespace DeepSeekSharp.Distributed;

/// <summary>What a parallel training run looks like on paper (<c>dss inspect --parallel</c>).</summary>
/// <param name="GlobalBatch">sequences per optimizer step, over all ranks</param>
/// <param name="SequenceLength">tokens per sequence</param>
/// <param name="MicroBatch">sequences per micro-batch on one rank</param>
/// <param name="Precision">fp32, bf16 or fp8 (the training precisions of <see cref="Fp8Training"/>)</param>
/// <param name="AdamMoments">fp32 or bf16</param>
/// <param name="Dispatch">what expert-parallel dispatch sends: fp32, bf16 or fp8 (E4M3 with 1×128 scales)</param>
/// <param name="Combine">what the combine sends back: fp32 or bf16</param>
/// <param name="RanksPerNode">ranks that share a node (its fast links); the rest is cross-node traffic</param>
/// <param name="RecomputeNorms">RMSNorm outputs rebuilt in the backward (config key recompute_norms)</param>
/// <param name="RecomputeMlaUp">MLA's q and kv_b rebuilt in the backward (config key recompute_mla_up)</param>
public sealed record ParallelPlanOptions(int GlobalBatch, int SequenceLength, int MicroBatch = 1, string Precision = "fp32",
    string AdamMoments = "fp32", string Dispatch = "fp32", string Combine = "fp32", int RanksPerNode = 8,
    bool RecomputeNorms = false, bool RecomputeMlaUp = false);

/// <summary>Bytes one rank of a stage holds at its peak.</summary>
public sealed record StageMemory(long WeightsFp32, long Fp8Codes, long Fp8Scales, long Bf16Copies, long Gradients, long OptimizerMoments, long Activations)
{
    public long Total => WeightsFp32 + Fp8Codes + Fp8Scales + Bf16Copies + Gradients + OptimizerMoments + Activations;
}

/// <summary>Bytes one rank of a stage sends per optimizer step (it receives as much).</summary>
/// <param name="EpCrossNode">the part of dispatch and combine that leaves the node, sent once per node (V3's scheme)</param>
public sealed record StageTraffic(long DpReduceScatter, long DpAllGather, long EpDispatch, long EpCombine, long EpCrossNode, long Pipeline)
{
    public long Total => DpReduceScatter + DpAllGather + EpDispatch + EpCombine + Pipeline;
}

/// <summary>One pipeline stage, seen from one of its ranks.</summary>
public sealed record StagePlan(int Stage, int FirstLayer, int Layers, int MoeLayers, bool Embedding, bool Head, int MtpDepths,
    long DenseParameters, long ExpertParametersPerRank, long OptimizerElements, int MicroBatchesInFlight, StageMemory Memory, StageTraffic Traffic);

/// <summary>
/// Per-rank memory and per-step communication of a <see cref="ParallelLayout"/>, from the model's shapes (no weights)
/// and the data-parallel reduction of <see cref="GradientBucket"/>. Formulas: docs/parallelism.md.
/// </summary>
public sealed partial record ParallelPlan(string Layout, int WorldSize, int Stages, int RanksPerStage, long TokensPerStep, long TokensPerRank,
    int MicroBatchesPerRank, ParallelPlanOptions Options, double ExpectedRemoteRanksPerToken, int MaxRemoteRanksPerToken,
    double ExpectedGroupsPerToken, double ExpectedRemoteNodesPerToken, int PeakStage, IReadOnlyList<StagePlan> StagePlans)
{
    public static ParallelPlan Estimate(DeepSeekModel model, ParallelLayout layout, ParallelPlanOptions o)
    {
        var c = model.Config;
        int dp = layout.DataParallel, ep = layout.ExpertParallel, pp = layout.PipelineParallel, stageRanks = layout.DenseDataParallel;
        int layers = c.NumHiddenLayers, mtp = model.MtpModules.Count;
        Check(o, layout, c);
        int microBatches = o.GlobalBatch / (stageRanks * o.MicroBatch);
        long tokensPerMicro = (long)o.MicroBatch * o.SequenceLength, tokensPerRank = tokensPerMicro * microBatches;

        // Parameters by stage: dense (held by every rank of the stage) and routed experts (split over ep ranks).
        var dense = new long[pp];
        var expert = new long[pp];
        var fp8Codes = new double[pp];
        var fp8Scales = new double[pp];
        var bf16 = new double[pp];
        var fp8Names = Fp8Checkpoint.QuantizedWeightNames(model);
        var linearNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (path, module) in model.NamedModules())
            if (module is Linear) linearNames.Add(path + ".weight");
        long embedding = 0;
        foreach (var (name, p) in model.NamedParameters())
        {
            int stage = StageOf(name, layers, pp);
            bool isExpert = name.Contains(".mlp.experts.", StringComparison.Ordinal);
            double share = isExpert ? 1.0 / ep : 1.0; // an expert weight lives on one of the ep ranks
            if (isExpert) expert[stage] += p.Length; else dense[stage] += p.Length;
            if (name == "model.embed_tokens.weight") embedding = p.Length;
            if (o.Precision == "fp8" && fp8Names.Contains(name))
            {
                fp8Codes[stage] += p.Length * share;
                fp8Scales[stage] += 4.0 * Blocks(p.Shape[0]) * Blocks(p.Shape[1]) * share;
            }
            if (o.Precision == "bf16" && linearNames.Contains(name)) bf16[stage] += 2.0 * p.Length * share;
        }

        // Routing spread: groups are node-limited routing's unit (V3: a group of experts fills a node).
        int e = c.NRoutedExperts ?? 0, k = c.NumExpertsPerTok ?? 0;
        bool grouped = c.HasMoe && c.NGroup is > 1 && c.TopkGroup is { } tg && tg < c.NGroup && c.TopkMethod != "greedy";
        int groups = grouped ? c.NGroup!.Value : 1, groupsPerToken = grouped ? c.TopkGroup!.Value : 1;
        double remoteRanks = 0, groupsHit = 0, remoteNodes = 0;
        int maxRemote = 0;
        if (c.HasMoe && ep > 1)
        {
            remoteRanks = RoutingSpread.ExpectedHolders(e, k, groups, groupsPerToken, ep) * (ep - 1) / ep;
            maxRemote = Math.Min(RoutingSpread.MaxHolders(e, k, groups, groupsPerToken, ep), ep - 1);
            int nodes = ep / o.RanksPerNode;
            if (ep > o.RanksPerNode && ep % o.RanksPerNode == 0 && e % nodes == 0)
                remoteNodes = RoutingSpread.ExpectedHolders(e, k, groups, groupsPerToken, nodes) * (nodes - 1) / nodes;
        }
        if (c.HasMoe) groupsHit = RoutingSpread.ExpectedGroups(e, k, groups, groupsPerToken);

        int h = c.HiddenSize;
        double dispatchCopy = h * DtypeBytes(o.Dispatch) + (o.Dispatch == "fp8" ? 4.0 * Blocks(h) : 0), combineCopy = h * DtypeBytes(o.Combine);
        double momentBytes = o.AdamMoments == "bf16" ? 2 : 4; // per moment; AdamW keeps two (m and v)
        var plans = new List<StagePlan>();
        for (int s = 0; s < pp; s++)
        {
            int first = (int)((long)s * layers / pp), end = (int)((long)(s + 1) * layers / pp);
            bool last = s == pp - 1;
            int moeLayers = Enumerable.Range(first, end - first).Count(c.IsMoeLayer) + (last && c.HasMoe ? mtp : 0);
            // The MTP depths on the last stage read the embedding: with pp > 1 it keeps a copy (weights and gradient).
            long copy = last && pp > 1 && mtp > 0 ? embedding : 0;
            long expertRank = expert[s] / ep, held = dense[s] + copy + expertRank;
            long optimizer = layout.ZeroStage == 1 ? Ceil(dense[s], stageRanks) + Ceil(expertRank, dp) : dense[s] + expertRank;

            var recipe = new ActivationRecipe(o.Precision, ep, o.RecomputeNorms, o.RecomputeMlaUp);
            double perToken = 0;
            for (int l = first; l < end; l++) perToken += ActivationMemory.Block(c, l, recipe);
            double perMicro = 0;
            if (last)
            {
                perToken += ActivationMemory.Head(c) + mtp * ActivationMemory.MtpDepth(c, recipe);
                perMicro = (1 + mtp) * ActivationMemory.HeadWeightGradient(c, tokensPerMicro);
            }
            int inFlight = Math.Min(pp - s, microBatches); // 1F1B: stage s holds pp − s micro-batches at its peak
            var memory = new StageMemory(4 * held, (long)fp8Codes[s], (long)fp8Scales[s], (long)bf16[s],
                4 * held, (long)(2 * momentBytes * optimizer), (long)(inFlight * (tokensPerMicro * perToken + perMicro)));

            double moeTokens = (double)tokensPerRank * moeLayers;
            long boundary = 4L * tokensPerRank * h; // fp32 activations forward, their gradients backward
            var traffic = new StageTraffic(
                DpReduceScatter: 4 * ((stageRanks - 1) * Ceil(dense[s], stageRanks) + (dp - 1) * Ceil(expertRank, dp)),
                DpAllGather: 4 * ((stageRanks - 1) * Ceil(dense[s], stageRanks) + (dp - 1) * Ceil(expertRank, dp)),
                // Forward dispatch and the backward's output gradients go one way, the combine and the input gradients back.
                EpDispatch: (long)(2 * moeTokens * remoteRanks * dispatchCopy),
                EpCombine: (long)(2 * moeTokens * remoteRanks * combineCopy),
                EpCrossNode: (long)(2 * moeTokens * remoteNodes * (dispatchCopy + combineCopy)),
                Pipeline: (s < pp - 1 ? boundary : 0) + (s > 0 ? boundary : 0) + 4 * copy);
            plans.Add(new StagePlan(s, first, end - first, moeLayers, s == 0, last, last ? mtp : 0, dense[s] + copy, expertRank, optimizer, inFlight, memory, traffic));
        }
        int peak = plans.MaxBy(p => p.Memory.Total)!.Stage;
        return new ParallelPlan(layout.ToString(), layout.WorldSize, pp, stageRanks, (long)o.GlobalBatch * o.SequenceLength, tokensPerRank, microBatches, o,
            remoteRanks, maxRemote, groupsHit, remoteNodes, peak, plans);
    }

    /// <summary>Pipeline stage of a parameter: layer l of L on stage ⌊l·pp/L⌋ boundaries; embedding first; final norm, head, MTP last.</summary>
    private static int StageOf(string name, int layers, int pp)
    {
        const string Prefix = "model.layers.";
        if (name.StartsWith("model.embed_tokens.", StringComparison.Ordinal)) return 0;
        if (!name.StartsWith(Prefix, StringComparison.Ordinal)) return pp - 1;
        int dot = name.IndexOf('.', Prefix.Length);
        int layer = int.Parse(name.AsSpan(Prefix.Length, dot - Prefix.Length), System.Globalization.CultureInfo.InvariantCulture);
        if (layer >= layers) return pp - 1;
        for (int s = pp - 1; s >= 0; s--)
            if ((long)s * layers / pp <= layer) return s;
        return 0;
    }

    private static void Check(ParallelPlanOptions o, ParallelLayout layout, DeepSeekConfig c)
    {
        if (o.GlobalBatch < 1 || o.SequenceLength < 1 || o.MicroBatch < 1)
            throw new DeepSeekSharpException("--batch, --seq and --micro-batch must be at least 1");
        if (o.GlobalBatch % ((long)layout.DenseDataParallel * o.MicroBatch) != 0)
            throw new DeepSeekSharpException($"--batch {o.GlobalBatch} sequences do not split into micro-batches of {o.MicroBatch} over the dp×ep = {layout.DenseDataParallel} ranks of a stage");
        if (layout.PipelineParallel > c.NumHiddenLayers)
            throw new DeepSeekSharpException($"--parallel: pp={layout.PipelineParallel} stages for {c.NumHiddenLayers} layers");
        if (layout.ExpertParallel > 1 && !c.HasMoe) throw new DeepSeekSharpException("--parallel: ep > 1 needs a model with routed experts");
        if (c.HasMoe && c.NRoutedExperts!.Value % layout.ExpertParallel != 0)
            throw new DeepSeekSharpException($"--parallel: {c.NRoutedExperts} routed experts cannot be split evenly over ep={layout.ExpertParallel}");
        if (o.RanksPerNode < 1) throw new DeepSeekSharpException("--ranks-per-node must be at least 1");
        if (o.Precision is not ("fp32" or "bf16" or "fp8")) throw new DeepSeekSharpException($"--precision {o.Precision}: one of fp32, bf16, fp8");
        if (o.AdamMoments is not ("fp32" or "bf16")) throw new DeepSeekSharpException($"--adam-moments {o.AdamMoments}: fp32 or bf16");
        if (o.Dispatch is not ("fp32" or "bf16" or "fp8")) throw new DeepSeekSharpException($"--ep-dispatch {o.Dispatch}: one of fp32, bf16, fp8");
        if (o.Combine is not ("fp32" or "bf16")) throw new DeepSeekSharpException($"--ep-combine {o.Combine}: fp32 or bf16");
    }

    private static double DtypeBytes(string dtype) => dtype switch { "fp8" => 1, "bf16" => 2, _ => 4 };

    private static long Blocks(long n) => (n + 127) / 128;

    /// <summary>⌈n / g⌉: a padded shard.</summary>
    private static long Ceil(long n, int g) => (n + g - 1) / g;
}
