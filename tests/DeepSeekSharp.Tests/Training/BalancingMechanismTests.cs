using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>
/// Auxiliary-loss-free balancing as training.md and the aux-loss-free paper define it: one bias update per optimizer
/// step from the global batch's expert counts (b_e += γ·sign(c̄ − c_e)), the bias steering selection only, and
/// MaxVio = (max_e c_e − c̄)/c̄ per MoE layer of the model.
/// </summary>
public class BalancingMechanismTests
{
    private const float Gamma = 0.001f;

    // ---- (a) the bias update: global-batch counts, once per optimizer step, sign rule ----

    [Fact]
    public void BiasUpdateAppliesTheSignRuleOnceToTheCountsSummedOverMicroBatches()
    {
        var model = SmallModel();
        var balancer = new BiasBalancer(model);
        var gates = balancer.Gates;
        Assert.Equal(4, gates.Count); // 3 MoE layers + the MTP block's MoE
        var summed = gates.Select(g => new long[g.Experts]).ToArray();
        var perMicro = new List<long[][]>();
        var rng = new Random(5);
        using (GradMode.NoGrad())
        {
            for (int micro = 0; micro < 2; micro++)
            {
                int[] tokens = Enumerable.Range(0, 2 * 24).Select(_ => rng.Next(2, 250)).ToArray();
                model.ForwardHidden(tokens, SequenceBatch.Training(2, 24), mtpDepth: 1);
                // Counts recomputed here from the chosen experts, not taken from the gate's own tally.
                var counts = gates.Select(g => CountsOf(g.LastIndices, g.Experts)).ToArray();
                perMicro.Add(counts);
                for (int i = 0; i < gates.Count; i++)
                    for (int e = 0; e < counts[i].Length; e++) summed[i][e] += counts[i][e];
                balancer.Accumulate();
            }
        }
        balancer.Update(Gamma);

        bool perMicroWouldDiffer = false;
        for (int i = 0; i < gates.Count; i++)
        {
            double mean = summed[i].Average();
            var bias = gates[i].ScoreCorrectionBias!.Span.ToArray();
            for (int e = 0; e < bias.Length; e++)
            {
                Assert.Equal(Gamma * Math.Sign(mean - summed[i][e]), bias[e], 7);
                float onePerMicro = perMicro.Sum(c => Gamma * Math.Sign(c[i].Average() - c[i][e]));
                perMicroWouldDiffer |= Math.Abs(onePerMicro - bias[e]) > Gamma / 2;
            }
        }
        Assert.True(perMicroWouldDiffer, "the case does not tell one update per step from one per micro-batch");

        // The counts were cleared: an update with nothing accumulated leaves the bias where it is.
        var before = gates.Select(g => g.ScoreCorrectionBias!.Span.ToArray()).ToArray();
        balancer.Update(Gamma);
        for (int i = 0; i < gates.Count; i++) Assert.Equal(before[i], gates[i].ScoreCorrectionBias!.Span.ToArray());
    }

    [Fact]
    public void AGateThatDidNotRunInAStepAddsNothing()
    {
        var model = SmallModel();
        var balancer = new BiasBalancer(model);
        int[] tokens = Enumerable.Range(0, 24).Select(i => 2 + i * 7 % 200).ToArray();
        using (GradMode.NoGrad())
        {
            model.ForwardHidden(tokens, SequenceBatch.Training(1, 24), mtpDepth: 1);
            balancer.Accumulate();
            Assert.Equal(4, balancer.Update(Gamma).PerGate.Length);
            float[] mtpBias = balancer.Gates[3].ScoreCorrectionBias!.Span.ToArray();
            // The MTP gate keeps its last counts, but this step ran the model alone.
            model.ForwardHidden(tokens, SequenceBatch.Training(1, 24), mtpDepth: 0);
            balancer.Accumulate();
            var step = balancer.Update(Gamma);
            Assert.Equal(3, step.PerGate.Length);
            Assert.Equal(mtpBias, balancer.Gates[3].ScoreCorrectionBias!.Span.ToArray());
        }
    }

    [Fact]
    public void SignRuleOnAHandCase()
    {
        // One layer's counts c = {10, 0, 5, 5, …}: c̄ = 5, so b += γ·{−1, +1, 0, 0, …}; MaxVio = (10 − 5)/5 = 1.
        var model = SmallModel();
        var balancer = new BiasBalancer(model);
        var gate = balancer.Gates[0];
        var bias = gate.ScoreCorrectionBias!.Span;
        bias.Fill(0.25f);
        // Experts 4..15 get 5 tokens each, so that c̄ stays 5 (Σ = 10 + 0 + 5 + 5 + 12·5 = 80 over 16 experts).
        long[] counts = [10, 0, 5, 5, .. Enumerable.Repeat(5L, gate.Experts - 4)];
        counts.CopyTo(balancer.Counts[0], 0);
        var step = balancer.Update(Gamma);
        Assert.Equal(0.25f - Gamma, bias[0], 7);
        Assert.Equal(0.25f + Gamma, bias[1], 7);
        for (int e = 2; e < counts.Length; e++) Assert.Equal(0.25f, bias[e], 7);
        Assert.Equal(1f, step.PerGate[0], 6);
    }

    [Fact]
    public void TrainerUpdatesTheBiasOncePerOptimizerStepFromTheGlobalBatch()
    {
        string dir = TestPaths.TempDir();
        string corpus = TinyRun.Corpus(dir);
        // The same two sequences as one micro-batch of 2 or two micro-batches of 1 (windows 0 and 1 either way), one step.
        string[] Settings(string name, int micro, int accum) => TinyRun.Settings(corpus, Path.Combine(dir, name),
            $"micro_batch_size={micro}", $"gradient_accumulation_steps={accum}", "max_steps=1", "save_steps=1",
            "balancing=bias", $"bias_update_speed={Gamma}", "seq_aux_alpha=0");
        var whole = TinyRun.Train(Settings("whole", 2, 1));
        var split = TinyRun.Train(Settings("split", 1, 2));
        var wholeBias = Biases(whole.LastCheckpoint!);
        var splitBias = Biases(split.LastCheckpoint!);
        Assert.Equal(wholeBias.Length, splitBias.Length);
        int moved = 0;
        for (int i = 0; i < wholeBias.Length; i++)
        {
            Assert.Equal(wholeBias[i], splitBias[i]);
            // One update of size γ: every entry is −γ, 0 or +γ (two updates would leave ±2γ where the micro-batches agree).
            foreach (float b in splitBias[i])
            {
                Assert.Contains(b, new[] { -Gamma, 0f, Gamma });
                moved += b != 0 ? 1 : 0;
            }
        }
        Assert.True(moved > 0);
        Assert.Equal(TrainScalar(Path.Combine(dir, "whole"), "max_vio"), TrainScalar(Path.Combine(dir, "split"), "max_vio"), 6);
    }

    [Theory]
    [InlineData("aux_loss")]
    [InlineData("none")]
    public void OnlyBiasBalancingMovesTheBias(string balancing)
    {
        string dir = TestPaths.TempDir();
        var result = TinyRun.Train(TinyRun.Settings(TinyRun.Corpus(dir), Path.Combine(dir, "run"), "max_steps=2", "save_steps=2",
            $"balancing={balancing}", "bias_update_speed=0.01"));
        foreach (var layer in Biases(result.LastCheckpoint!)) Assert.All(layer, b => Assert.Equal(0f, b));
    }

    // ---- (b) only selection sees the bias ----

    [Fact]
    public void BiasChangesSelectionButTheWeightsComeFromTheUnbiasedScores()
    {
        var c = RouterConfig();
        var moe = new Moe(c, materialize: true);
        var rng = new Random(11);
        foreach (var (_, p) in moe.NamedParameters())
            for (int j = 0; j < p.Span.Length; j++) p.Span[j] = (float)(rng.NextDouble() - 0.5) * 0.4f;
        // Token t is the one-hot vector e_t, so its logit for expert e is W[e, t]: pick W so that the sigmoid
        // scores are round numbers.
        double[][] scores = [[0.9, 0.8, 0.3, 0.2], [0.6, 0.1, 0.5, 0.7]];
        float[] bias = [0f, 0f, 0.7f, 0f];
        var w = moe.Gate.Weight.Span;
        w.Clear();
        for (int t = 0; t < 2; t++)
            for (int e = 0; e < 4; e++) w[e * c.HiddenSize + t] = (float)Math.Log(scores[t][e] / (1 - scores[t][e]));
        bias.CopyTo(moe.Gate.ScoreCorrectionBias!.Span);
        var x = Tensor.Zeros(2, c.HiddenSize);
        x.Span[0] = 1f;
        x.Span[c.HiddenSize + 1] = 1f;

        // By hand: token 0 selects on {0.9, 0.8, 1.0, 0.2} → experts 2, 0; token 1 on {0.6, 0.1, 1.2, 0.7} → 2, 3.
        // Weights = unbiased scores of the chosen experts, normalised, × routed_scaling_factor 2.5:
        // token 0: 0.3/1.2·2.5, 0.9/1.2·2.5; token 1: 0.5/1.2·2.5, 0.7/1.2·2.5. (With the bias leaking into the
        // weights token 0 would get 1.0/1.9·2.5 = 1.316 for expert 2.)
        int[] expectedIdx = [2, 0, 2, 3];
        double[] expectedW = [0.625, 1.875, 0.5 / 1.2 * 2.5, 0.7 / 1.2 * 2.5];
        using (GradMode.NoGrad())
        {
            var (_, idx, weights) = moe.Gate.Forward(x);
            Assert.Equal(expectedIdx, idx);
            for (int j = 0; j < 4; j++) Assert.Equal(expectedW[j], weights.Span[j], 5);

            // The MoE output is Σ_j w_j · Expert_idx_j(x) + Shared(x) with those weights.
            var y = moe.Forward(x).Span.ToArray();
            for (int t = 0; t < 2; t++)
            {
                var row = Tensor.FromArray(x.Span.Slice(t * c.HiddenSize, c.HiddenSize).ToArray(), 1, c.HiddenSize);
                var expected = moe.SharedExperts!.Forward(row).Span.ToArray().Select(v => (double)v).ToArray();
                for (int j = 0; j < 2; j++)
                {
                    var expert = moe.Experts[expectedIdx[t * 2 + j]].Forward(row).Span;
                    for (int h = 0; h < c.HiddenSize; h++) expected[h] += expectedW[t * 2 + j] * expert[h];
                }
                for (int h = 0; h < c.HiddenSize; h++) Assert.Equal(expected[h], y[t * c.HiddenSize + h], 5);
            }
        }
    }

    [Fact]
    public void SequenceWiseAndBatchWiseBalanceLossOnAHandCase()
    {
        // Two sequences of T = 2 tokens, N_r = 2 experts, K_r = 1; s' = scores normalised per token.
        // Sequence 1: s' = {0.9, 0.1}, {0.75, 0.25}, both routed to expert 0: f = {2, 0}, P_0 = 0.825 → 1.65.
        // Sequence 2: s' = {0.5, 0.5}, {0.25, 0.75}, both routed to expert 1: f = {0, 2}, P_1 = 0.625 → 1.25.
        // Sequence-wise: α · mean(1.65, 1.25) = 1.45 α. Batch-wise (one group of 4): f = {1, 1}, P = {0.6, 0.4} → α.
        var scores = Tensor.FromArray([0.9f, 0.1f, 0.3f, 0.1f, 0.5f, 0.5f, 0.2f, 0.6f], 4, 2);
        int[] idx = [0, 0, 1, 1];
        using (GradMode.NoGrad())
        {
            Assert.Equal(0.145f, Functional.BalanceLoss(scores, idx, 1, groupRows: 2, alpha: 0.1f).Data[0], 6);
            Assert.Equal(0.1f, Functional.BalanceLoss(scores, idx, 1, groupRows: 4, alpha: 0.1f).Data[0], 6);
        }
    }

    // ---- (c) MaxVio as the paper defines it, per MoE layer ----

    [Theory]
    [InlineData(new long[] { 3, 3, 3, 3 }, 0.0)]          // perfect balance
    [InlineData(new long[] { 7, 1, 0, 0 }, 2.5)]          // c̄ = 2: (7 − 2)/2
    [InlineData(new long[] { 0, 0, 0, 0 }, 0.0)]          // nothing routed
    [InlineData(new long[] { 6, 2, 2, 2, 3 }, 1.0)]        // c̄ = 3: (6 − 3)/3
    public void MaxVioOnHandCases(long[] counts, double expected) =>
        Assert.Equal(expected, BiasBalancer.MaxVio(counts), 6);

    [Theory]
    [InlineData(1)]
    [InlineData(0)]
    public void LoggedMaxVioIsPerModelLayerAndTheirMean(int mtpDepth)
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "run");
        TinyRun.Train(TinyRun.Settings(TinyRun.Corpus(dir), output, "max_steps=2", "save_steps=2", $"mtp_depth={mtpDepth}",
            "val_set_size=0.2"));
        var records = File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        var eval = records.Last(r => (string)r["kind"]! == "eval");
        var load = eval["expert_load_per_layer"]!.AsArray().Select(row => row!.AsArray().Select(v => (long)v!).ToArray()).ToArray();
        var perLayer = eval["val_max_vio_per_layer"]!.AsArray().Select(v => (double)v!).ToArray();
        // Validation runs the model without the MTP block: its 3 MoE layers, each with every evaluation token routed
        // to k = 4 experts (the evaluation covers 2 windows of 32 tokens).
        Assert.Equal(3, load.Length);
        Assert.Equal(3, perLayer.Length);
        for (int l = 0; l < 3; l++)
        {
            Assert.Equal(2 * 32 * 4, load[l].Sum());
            double mean = load[l].Average();
            Assert.Equal((load[l].Max() - mean) / mean, perLayer[l], 5);
        }
        Assert.Equal(perLayer.Average(), (double)eval["val_max_vio"]!, 5);

        // Training records: one value per MoE block that ran (the MTP block's only when it ran); the scalar is the
        // mean over the model's 3 layers, so runs with and without MTP compare the same layers.
        foreach (var train in records.Where(r => (string)r["kind"]! == "train"))
        {
            var vio = train["max_vio_per_layer"]!.AsArray().Select(v => (double)v!).ToArray();
            Assert.Equal(3 + mtpDepth, vio.Length);
            Assert.All(vio, v => Assert.True(v > 0, "a layer that routed tokens reported perfect balance"));
            Assert.Equal(vio.Take(3).Average(), (double)train["max_vio"]!, 5);
        }
    }

    // ---- helpers ----

    private static long[] CountsOf(int[] indices, int experts)
    {
        var counts = new long[experts];
        foreach (int e in indices) counts[e]++;
        return counts;
    }

    private static DeepSeekModel SmallModel()
    {
        var node = JsonNode.Parse(Presets.TinyV3)!;
        node["vocab_size"] = 264;
        node["hidden_size"] = 64;
        node["intermediate_size"] = 128;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(model, 3);
        return model;
    }

    /// <summary>4 routed experts, top-2, no groups, sigmoid + noaux_tc, normalised weights × 2.5, one shared expert.</summary>
    private static DeepSeekConfig RouterConfig()
    {
        var node = JsonNode.Parse(Presets.TinyV3)!;
        node["hidden_size"] = 8;
        node["moe_intermediate_size"] = 6;
        node["n_routed_experts"] = 4;
        node["num_experts_per_tok"] = 2;
        node["n_group"] = 1;
        node["topk_group"] = 1;
        return DeepSeekConfig.Parse(node.ToJsonString());
    }

    /// <summary>The routing bias of every MoE block in a checkpoint (model layers, then MTP), in that order.</summary>
    private static float[][] Biases(string checkpoint)
    {
        var model = ModelCheckpoint.Load(checkpoint);
        return model.NamedBuffers().Where(b => b.Name.EndsWith("e_score_correction_bias", StringComparison.Ordinal))
            .Select(b => b.Buffer.Span.ToArray()).ToArray();
    }

    private static double TrainScalar(string output, string key) =>
        File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .First(r => r.GetProperty("kind").GetString() == "train").GetProperty(key).GetDouble();
}
