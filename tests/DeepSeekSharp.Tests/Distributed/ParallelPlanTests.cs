using DeepSeekSharp.Distributed;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Distributed;

/// <summary><c>dss inspect --parallel</c>: the layout, the routing spread and the per-rank estimates on configs small enough to count by hand.</summary>
public class ParallelPlanTests
{
    /// <summary>
    /// H 128, V 256, 2 heads (nope 16, rope 16, v 16), kv_lora 32, no q LoRA; layer 0 dense (I 256), layer 1 MoE: 4 routed
    /// experts of Im 64, top-2 without groups, 1 shared expert; no MTP.
    /// </summary>
    private static DeepSeekModel Tiny(int mtp = 0) => new(DeepSeekConfig.Parse($$"""
        {"model_type": "deepseek_v3", "vocab_size": 256, "hidden_size": 128, "intermediate_size": 256, "moe_intermediate_size": 64,
         "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
         "qk_rope_head_dim": 16, "v_head_dim": 16, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
         "n_group": 1, "topk_group": 1, "num_nextn_predict_layers": {{mtp}}, "max_position_embeddings": 64}
        """), materialize: false);

    /// <summary>Average distinct holders over every choice of groups and experts, by enumeration.</summary>
    private static double BruteForceHolders(int experts, int k, int groups, int groupsPerToken, int holders)
    {
        int groupSize = experts / groups, perHolder = experts / holders;
        double sum = 0;
        long cases = 0;
        foreach (var chosenGroups in Subsets(Enumerable.Range(0, groups).ToArray(), groupsPerToken))
        {
            int[] pool = [.. chosenGroups.SelectMany(g => Enumerable.Range(g * groupSize, groupSize))];
            foreach (var chosen in Subsets(pool, k))
            {
                sum += chosen.Select(e => e / perHolder).Distinct().Count();
                cases++;
            }
        }
        return sum / cases;
    }

    private static IEnumerable<int[]> Subsets(int[] items, int size)
    {
        if (size == 0) { yield return []; yield break; }
        for (int i = 0; i <= items.Length - size; i++)
            foreach (var rest in Subsets(items[(i + 1)..], size - 1)) yield return [items[i], .. rest];
    }

    [Theory]
    [InlineData(4, 2, 1, 1, 4)]   // one expert per rank: always k ranks
    [InlineData(4, 2, 1, 1, 2)]   // 1 + 2/3: P(rank hit) = 1 − C(2,2)/C(4,2) = 5/6
    [InlineData(8, 2, 4, 2, 4)]   // ranks aligned with groups
    [InlineData(12, 3, 4, 2, 3)]  // groups straddle ranks
    [InlineData(16, 4, 4, 2, 8)]  // two ranks per group
    [InlineData(16, 4, 4, 2, 2)]  // two groups per rank
    public void ExpectedDestinationsMatchEnumeration(int experts, int k, int groups, int groupsPerToken, int holders)
    {
        double expected = BruteForceHolders(experts, k, groups, groupsPerToken, holders);
        Assert.Equal(expected, RoutingSpread.ExpectedHolders(experts, k, groups, groupsPerToken, holders), 9);
        Assert.Equal(BruteForceHolders(experts, k, groups, groupsPerToken, groups), RoutingSpread.ExpectedGroups(experts, k, groups, groupsPerToken), 9);
        Assert.InRange(RoutingSpread.MaxHolders(experts, k, groups, groupsPerToken, holders), Math.Ceiling(expected - 1e-9), k);
    }

    [Fact]
    public void TheTwoHolderCaseIsFiveThirds() => Assert.Equal(5.0 / 3, RoutingSpread.ExpectedHolders(4, 2, 1, 1, 2), 12);

    [Fact]
    public void LayoutsParseAndBadOnesAreRefusedNamingTheKey()
    {
        Assert.Equal(new ParallelLayout(2, 64, 16, 1), ParallelLayout.Parse("dp=2, ep=64,pp=16,zero=1"));
        Assert.Equal(new ParallelLayout(1, 4, 1, 0), ParallelLayout.Parse("ep=4"));
        Assert.Equal(2048, ParallelLayout.Parse("pp=16,ep=64,dp=2").WorldSize);
        foreach (var (text, message) in new[] { ("dp=0", "dp=0"), ("tp=2", "unknown key 'tp'"), ("dp=2,dp=4", "dp is given twice"), ("zero=3", "zero=3"), ("ep", "'ep'"), ("", "empty") })
            Assert.Contains(message, Assert.Throws<DeepSeekSharpException>(() => ParallelLayout.Parse(text)).Message);
    }

    [Fact]
    public void ActivationFormulaTermsForTheTinyConfig()
    {
        var c = Tiny().Config;
        // h, normed, q [n·32], c_kv raw + normed [2·32], k_pe [16], kv_b [n·32], o [n·16], lse [n], 2 norms' 1/rms.
        Assert.Equal(4.0 * (128 + 128 + 64 + 64 + 16 + 64 + 32 + 2 + 2), ActivationMemory.Attention(c, new ActivationRecipe("fp32")));
        // a + its 1/rms, normed, gate/up/down inputs [3·256].
        Assert.Equal(4.0 * (128 + 1 + 128 + 3 * 256), ActivationMemory.FeedForward(c, moe: false, new ActivationRecipe("fp32")));
        // a, 1/rms, normed, scores [4], weights [2]; per slot gate+up [2·64] and the output [128] (+ the received rows under EP); shared [3·64].
        Assert.Equal(4.0 * (128 + 1 + 128 + 4 + 2 + 2 * (128 + 128) + 3 * 64), ActivationMemory.FeedForward(c, moe: true, new ActivationRecipe("fp32")));
        Assert.Equal(4.0 * (128 + 1 + 128 + 4 + 2 + 2 * (128 + 128 + 128) + 3 * 64), ActivationMemory.FeedForward(c, moe: true, new ActivationRecipe("fp32", ExpertParallel: 2)));
    }

    [Fact]
    public void RecomputationDropsTheNormOutputsAndMlaUpProjections()
    {
        var c = Tiny().Config;
        var plain = new ActivationRecipe("fp32");
        // recompute_norms: the normed inputs of attention and FFN and kv_a_layernorm's output (no q LoRA here).
        Assert.Equal(4.0 * (128 + 32), ActivationMemory.Attention(c, plain) - ActivationMemory.Attention(c, plain with { RecomputeNorms = true }));
        Assert.Equal(4.0 * 128, ActivationMemory.FeedForward(c, true, plain) - ActivationMemory.FeedForward(c, true, plain with { RecomputeNorms = true }));
        // recompute_mla_up: q [n·(16+16)] and kv_b [n·(16+16)].
        Assert.Equal(4.0 * (64 + 64), ActivationMemory.Attention(c, plain) - ActivationMemory.Attention(c, plain with { RecomputeMlaUp = true }));
    }

    [Fact]
    public void PerRankMemoryAndTrafficOfATinyLayoutAreTheHandCounts()
    {
        var plan = ParallelPlan.Estimate(Tiny(), ParallelLayout.Parse("dp=2,ep=2,pp=2,zero=1"), new ParallelPlanOptions(GlobalBatch: 8, SequenceLength: 4, RanksPerNode: 1));
        Assert.Equal((8, 2, 4, 2, 8L), (plan.WorldSize, plan.Stages, plan.RanksPerStage, plan.MicroBatchesPerRank, plan.TokensPerRank));

        // Attention per layer: q_proj 128·64 + kv_a 128·48 + kv_a_layernorm 32 + kv_b 32·64 + o_proj 32·128 + two norms 2·128.
        const long Attention = 8192 + 6144 + 32 + 2048 + 4096 + 256;
        var s0 = plan.StagePlans[0];
        Assert.Equal(256 * 128 + Attention + 3 * 128 * 256, s0.DenseParameters); // embedding, layer 0 with its dense MLP
        Assert.Equal(0, s0.ExpertParametersPerRank);
        var s1 = plan.StagePlans[1];
        Assert.Equal(Attention + 4 * 128 + 3 * 128 * 64 + 128 + 256 * 128, s1.DenseParameters); // gate, shared expert, final norm, head
        Assert.Equal(4 / 2 * 3 * 128 * 64, s1.ExpertParametersPerRank);                       // 2 of the 4 experts
        long held = s1.DenseParameters + s1.ExpertParametersPerRank;
        Assert.Equal(4 * held, s1.Memory.WeightsFp32);
        Assert.Equal(4 * held, s1.Memory.Gradients);
        // ZeRO-1: dense state over the stage's 4 ranks, expert state over dp = 2, padded shards.
        long optimizer = (s1.DenseParameters + 3) / 4 + (s1.ExpertParametersPerRank + 1) / 2;
        Assert.Equal(optimizer, s1.OptimizerElements);
        Assert.Equal(2 * 4 * optimizer, s1.Memory.OptimizerMoments);

        // Activations: stage 0 holds both micro-batches (1F1B: pp − 0), stage 1 one; 4 tokens each.
        var c = Tiny().Config;
        Assert.Equal((long)(2 * 4 * ActivationMemory.Block(c, 0, new ActivationRecipe("fp32", 2))), s0.Memory.Activations);
        Assert.Equal((long)(4 * (ActivationMemory.Block(c, 1, new ActivationRecipe("fp32", 2)) + ActivationMemory.Head(c))), s1.Memory.Activations);

        // DP: each direction sends (g − 1) shards of ⌈n/g⌉ floats per group.
        long dp = 4 * (3 * ((s1.DenseParameters + 3) / 4) + 1 * ((s1.ExpertParametersPerRank + 1) / 2));
        Assert.Equal((dp, dp), (s1.Traffic.DpReduceScatter, s1.Traffic.DpAllGather));
        // EP: a token's 2 experts sit on 5/3 of the 2 ranks on average, 5/6 of them remote; fp32 rows of 128 floats,
        // forward and backward, 8 tokens through the one MoE layer.
        Assert.Equal(5.0 / 6, plan.ExpectedRemoteRanksPerToken, 12);
        Assert.Equal((long)(2 * 8 * (5.0 / 6) * 512), s1.Traffic.EpDispatch);
        Assert.Equal((long)(2 * 8 * (5.0 / 6) * 512), s1.Traffic.EpCombine);
        Assert.Equal((long)(2 * 8 * (5.0 / 6) * 1024), s1.Traffic.EpCrossNode); // one rank per node: every remote rank is another node
        Assert.Equal(0, s0.Traffic.EpDispatch);
        // PP: 8 tokens × 128 fp32 values cross each stage boundary forward, their gradients backward.
        Assert.Equal((4L * 8 * 128, 4L * 8 * 128), (s0.Traffic.Pipeline, s1.Traffic.Pipeline));
    }

    [Fact]
    public void Fp8WeightCopiesCountCodesAndBlockScalesOfTheV3Linears()
    {
        var plan = ParallelPlan.Estimate(Tiny(), ParallelLayout.Parse("ep=2,pp=2"), new ParallelPlanOptions(GlobalBatch: 2, SequenceLength: 4, Precision: "fp8", AdamMoments: "bf16"));
        var s1 = plan.StagePlans[1];
        // q_proj, kv_a, kv_b, o_proj; the shared expert; 2 of the 4 experts. The gate and the head stay fp32.
        Assert.Equal(8192 + 6144 + 2048 + 4096 + 3 * 128 * 64 + 2 * 3 * 128 * 64, s1.Memory.Fp8Codes);
        // One 128×128 block (4 bytes) per Linear here: 4 attention + 3 shared + 3·2 expert Linears.
        Assert.Equal(4 * (4 + 3 + 6), s1.Memory.Fp8Scales);
        Assert.Equal(2 * 2 * s1.OptimizerElements, s1.Memory.OptimizerMoments); // bf16 moments, no ZeRO: every element
        Assert.Equal(s1.DenseParameters + s1.ExpertParametersPerRank, s1.OptimizerElements);
    }

    [Fact]
    public void WithPipelineStagesTheLastKeepsAnEmbeddingCopyForMtp()
    {
        var one = ParallelPlan.Estimate(Tiny(mtp: 1), ParallelLayout.Parse("pp=1"), new ParallelPlanOptions(1, 4));
        var two = ParallelPlan.Estimate(Tiny(mtp: 1), ParallelLayout.Parse("pp=2"), new ParallelPlanOptions(1, 4));
        long all = one.StagePlans[0].DenseParameters;
        Assert.Equal(all + 256 * 128, two.StagePlans[0].DenseParameters + two.StagePlans[1].DenseParameters);
        Assert.Equal(2, two.StagePlans[1].MoeLayers); // layer 1 and the MTP block
        Assert.Equal(4L * 4 * 128 + 4 * 256 * 128, two.StagePlans[1].Traffic.Pipeline); // the copy's gradient goes to stage 0
    }

    [Fact]
    public void ImpossibleLayoutsAreUserErrors()
    {
        var model = Tiny();
        foreach (var (layout, options, message) in new[]
        {
            ("ep=3", new ParallelPlanOptions(3, 4), "4 routed experts cannot be split evenly over ep=3"),
            ("pp=3", new ParallelPlanOptions(1, 4), "pp=3 stages for 2 layers"),
            ("dp=2", new ParallelPlanOptions(3, 4), "--batch 3 sequences do not split"),
        })
            Assert.Contains(message, Assert.Throws<DeepSeekSharpException>(() => ParallelPlan.Estimate(model, ParallelLayout.Parse(layout), options)).Message);
    }

    [Fact]
    public void InspectEstimatesDeepSeekV3OnItsOwnLayout()
    {
        string v3 = Path.Combine(TestPaths.RepoRoot, "configs", "models", "deepseek-v3");
        var r = DssProcess.Run("inspect", "--model", v3, "--parallel", "dp=2,ep=64,pp=16,zero=1", "--batch", "15360", "--seq", "4096", "--precision", "fp8", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal(2048, root.GetProperty("world_size").GetInt32());
        Assert.Equal(16, root.GetProperty("stage_plans").GetArrayLength());
        // Node-limited routing: at most 4 nodes per token (§3.2.2), one of which may be the token's own.
        Assert.InRange(root.GetProperty("expected_remote_nodes_per_token").GetDouble(), 3, 4);
        Assert.InRange(root.GetProperty("expected_groups_per_token").GetDouble(), 3, 4);
        Assert.Equal(120, root.GetProperty("micro_batches_per_rank").GetInt32()); // 15,360 sequences over 128 ranks per stage

        DssProcess.AssertCleanError(DssProcess.Run("inspect", "--model", v3, "--parallel", "dp=2,ep=3"), "256 routed experts cannot be split evenly over ep=3");
    }
}
