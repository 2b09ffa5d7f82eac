using DeepSeekSharp.Autograd;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Autograd;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// LoRA on a Linear and on the v3-tiny model: the forward is x·Wᵀ + scale·(x·Aᵀ)·Bᵀ (computed here with plain loops),
/// the gradients of A and B agree with finite differences, an untrained adapter (B = 0) leaves the logits bit-identical,
/// and a PEFT folder written and loaded again gives the same logits.
/// </summary>
public sealed class LoraAdapterTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private static Linear RandomLinear(Random rng, int inFeatures, int outFeatures)
    {
        var linear = new Linear(inFeatures, outFeatures, materialize: true);
        var w = linear.Weight.Span;
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1);
        return linear;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ForwardIsBaseProductPlusScaledLowRankProduct(bool rslora)
    {
        var rng = new Random(3);
        const int n = 5, inF = 7, outF = 6, r = 4;
        var linear = RandomLinear(rng, inF, outF);
        var lora = new LoraLinear(inF, outF, r, alpha: 12, rslora);
        lora.Initialize(rng);
        for (int i = 0; i < lora.B.Length; i++) lora.B.Span[i] = (float)(rng.NextDouble() * 2 - 1);
        linear.AttachAdapter(lora, [("lora_A.weight", lora.A), ("lora_B.weight", lora.B)]);
        var x = GradCheck.Random(rng, 1, n, inF);
        float[] y;
        using (GradMode.NoGrad()) y = linear.Forward(x).Span.ToArray();
        double scale = rslora ? 12 / Math.Sqrt(r) : 12.0 / r;
        Assert.Equal((float)scale, lora.Scale, 6);
        for (int row = 0; row < n; row++)
            for (int o = 0; o < outF; o++)
            {
                double expected = 0;
                for (int i = 0; i < inF; i++) expected += (double)x.Data[row * inF + i] * linear.Weight.Data[o * inF + i];
                for (int k = 0; k < r; k++)
                {
                    double ax = 0;
                    for (int i = 0; i < inF; i++) ax += (double)x.Data[row * inF + i] * lora.A.Data[k * inF + i];
                    expected += scale * ax * lora.B.Data[o * r + k];
                }
                Assert.Equal(expected, y[row * outF + o], 4);
            }
        Assert.Equal(["weight", "lora_A.weight", "lora_B.weight"], linear.NamedParameters().Select(p => p.Name));
    }

    [Fact]
    public void AInitialisationIsKaimingUniformAndBIsZero()
    {
        var lora = new LoraLinear(64, 10, 8, 16, false);
        lora.Initialize(new Random(1));
        float bound = 1 / MathF.Sqrt(64);
        Assert.All(lora.A.Data, a => Assert.InRange(a, -bound, bound));
        Assert.True(lora.A.Data.Max() > 0.8f * bound && lora.A.Data.Min() < -0.8f * bound);
        Assert.All(lora.B.Data, b => Assert.Equal(0f, b));
    }

    [Fact]
    public void GradientsOfAAndBOnALinearMatchFiniteDifferences()
    {
        var rng = new Random(4);
        var linear = RandomLinear(rng, 9, 5);
        linear.Weight.RequiresGrad = false;
        var lora = new LoraLinear(9, 5, 3, alpha: 6, useRslora: false);
        lora.Initialize(rng);
        for (int i = 0; i < lora.B.Length; i++) lora.B.Span[i] = (float)(rng.NextDouble() * 2 - 1);
        linear.AttachAdapter(lora, [("lora_A.weight", lora.A), ("lora_B.weight", lora.B)]);
        var x = GradCheck.Random(rng, 1, 4, 9);
        GradCheck.Check(() => linear.Forward(x), [lora.A, lora.B, x]);
        Assert.Null(linear.Weight.Grad);
    }

    private static readonly string[] EveryKind = ["q_a_proj", "kv_b_proj", "o_proj", "layers\\.0\\.mlp\\.gate_proj", "shared_experts", "mlp.experts.*.down_proj"];

    [Fact]
    public void GradientsThroughTheModelMatchFiniteDifferences()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var result = LoraAdapters.Apply(model, new LoraSettings(2, 4, EveryKind), seed: 7);
        string[] kinds = ["self_attn.q_a_proj", "self_attn.kv_b_proj", "self_attn.o_proj", "layers.0.mlp.gate_proj", "shared_experts.up_proj", "experts.0.down_proj"];
        var chosen = kinds.Select(k => result.Adapters.First(a => a.Key.Contains(k, StringComparison.Ordinal)).Value).ToList();
        var rng = new Random(9);
        foreach (var lora in chosen)
            for (int i = 0; i < lora.B.Length; i++) lora.B.Span[i] = (float)(rng.NextDouble() * 2 - 1) * 0.1f;
        int[] tokens = [3, 17, 9, 25, 4, 11, 30, 2];
        var batch = SequenceBatch.Training(1, tokens.Length);
        // Small steps: a routed expert's adapter must not flip the top-k choice between the two probes.
        GradCheck.Check(() => model.Forward(tokens, batch).Logits, chosen.SelectMany(l => new Tensor[] { l.A, l.B }).ToArray(), probes: 6, eps: 1e-3f, tol: 3e-2);
        Assert.All(model.NamedParameters().Where(p => !p.Name.Contains(".lora_", StringComparison.Ordinal)), p => Assert.Null(p.Parameter.Grad));
    }

    [Fact]
    public void UntrainedAdaptersLeaveTheLogitsBitIdentical()
    {
        string fixture = TestPaths.Fixture("v3-tiny");
        int[] tokens = [5, 8, 13, 21, 34, 55, 1, 2];
        var batch = SequenceBatch.Training(1, tokens.Length);
        var plain = ModelCheckpoint.Load(fixture);
        // Adapted experts take the grouped path as plain ones do (the zero low-rank product adds exact zeros).
        long groupedBefore = DeepSeekSharp.Autograd.Ops.GroupedExpertsOp.Calls;
        var adapted = ModelCheckpoint.Load(fixture);
        var result = LoraAdapters.Apply(adapted, new LoraSettings(4, 8, [], TargetLinear: true), seed: 1);
        Assert.DoesNotContain(result.Adapters.Keys, k => k.Contains("lm_head", StringComparison.Ordinal) || k.EndsWith(".gate", StringComparison.Ordinal));
        Assert.Contains(result.Adapters.Keys, k => k.Contains("mlp.experts.", StringComparison.Ordinal));
        using (GradMode.NoGrad())
            Assert.Equal(plain.Forward(tokens, batch).Logits.Span.ToArray(), adapted.Forward(tokens, batch).Logits.Span.ToArray());
        Assert.True(DeepSeekSharp.Autograd.Ops.GroupedExpertsOp.Calls >= groupedBefore + 2 * plain.Config.MoeLayerCount);
        Assert.All(adapted.NamedParameters(), p => Assert.Equal(p.Name.Contains(".lora_", StringComparison.Ordinal), p.Parameter.RequiresGrad));
        Assert.Equal(result.Adapters.Values.Sum(a => a.A.Length + a.B.Length), result.TrainableElements);
    }

    [Fact]
    public void PeftFolderRoundTripGivesIdenticalLogits()
    {
        string fixture = TestPaths.Fixture("v3-tiny");
        var model = ModelCheckpoint.Load(fixture);
        var settings = new LoraSettings(3, 5, EveryKind, UseRslora: true, ModulesToSave: ["lm_head"]);
        var result = LoraAdapters.Apply(model, settings, seed: 2);
        var rng = new Random(5);
        foreach (var lora in result.Adapters.Values)
            for (int i = 0; i < lora.B.Length; i++) lora.B.Span[i] = (float)(rng.NextDouble() * 2 - 1) * 0.05f;
        model.LmHead.Weight.Span[0] += 1;
        LoraAdapters.WriteFiles(model, _dir, settings, fixture);

        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, LoraAdapters.ConfigFile)))!;
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", config["task_type"]!.GetValue<string>());
        Assert.Equal(3, config["r"]!.GetValue<int>());
        Assert.Equal(5f, config["lora_alpha"]!.GetValue<float>());
        Assert.True(config["use_rslora"]!.GetValue<bool>());
        Assert.Equal("none", config["bias"]!.GetValue<string>());
        Assert.Equal(result.Adapters.Keys.Order(), config["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()).Order());
        Assert.False(config["fan_in_fan_out"]!.GetValue<bool>());
        Assert.Equal(fixture, config["base_model_name_or_path"]!.GetValue<string>());
        using (var reader = SafeTensorsReader.Open(Path.Combine(_dir, LoraAdapters.WeightsFile)))
        {
            var names = reader.Tensors.Select(t => t.Name).ToHashSet();
            Assert.Contains("base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight", names);
            Assert.Contains("base_model.model.lm_head.weight", names);
            Assert.Contains(names, n => System.Text.RegularExpressions.Regex.IsMatch(n, @"^base_model\.model\.model\.layers\.\d+\.mlp\.experts\.\d+\.down_proj\.lora_B\.weight$"));
            Assert.Equal(2 * result.Adapters.Count + 1, names.Count);
            Assert.DoesNotContain(names, n => n.Contains("embed_tokens", StringComparison.Ordinal));
        }

        var loaded = ModelCheckpoint.Load(fixture);
        LoraAdapters.Load(loaded, _dir);
        int[] tokens = [5, 8, 13, 21, 34, 55, 1, 2];
        var batch = SequenceBatch.Training(1, tokens.Length);
        using (GradMode.NoGrad())
        {
            var expected = model.Forward(tokens, batch).Logits.Span.ToArray();
            Assert.Equal(expected, loaded.Forward(tokens, batch).Logits.Span.ToArray());
            Assert.NotEqual(expected, ModelCheckpoint.Load(fixture).Forward(tokens, batch).Logits.Span.ToArray());
        }
    }

    [Fact]
    public void AdapterTensorsMatchingNoModuleAreOneErrorListingThem()
    {
        File.WriteAllText(Path.Combine(_dir, LoraAdapters.ConfigFile), """{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "alpha_pattern": {"o_proj": 8}}""");
        SafeTensorsWriter.WriteFloat32(Path.Combine(_dir, LoraAdapters.WeightsFile), [
            ("base_model.model.model.layers.0.self_attn.nope_proj.lora_A.weight", [2, 4], new float[8]),
            ("base_model.model.model.layers.0.self_attn.nope_proj.lora_B.weight", [4, 2], new float[8]),
            ("base_model.model.model.layers.99.mlp.up_proj.lora_A.weight", [2, 4], new float[8]),
        ]);
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var e = Assert.Throws<DeepSeekSharpException>(() => LoraAdapters.Load(model, _dir));
        Assert.Contains("3 tensor(s) match no module", e.Message);
        Assert.Contains("layers.99.mlp.up_proj.lora_A", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void HfPeftAlphaPatternAndRankFromTheTensorsAreHonoured()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var o = (Linear)model.NamedModules().First(m => m.Name == "model.layers.0.self_attn.o_proj").Module;
        var kvb = (Linear)model.NamedModules().First(m => m.Name == "model.layers.0.self_attn.kv_b_proj").Module;
        File.WriteAllText(Path.Combine(_dir, LoraAdapters.ConfigFile),
            """{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "rank_pattern": {"o_proj": 5}, "alpha_pattern": {"o_proj": 10}, "bias": "none", "fan_in_fan_out": false}""");
        SafeTensorsWriter.WriteFloat32(Path.Combine(_dir, LoraAdapters.WeightsFile), [
            ("base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight", [5, o.InFeatures], new float[5 * o.InFeatures]),
            ("base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight", [o.OutFeatures, 5], new float[5 * o.OutFeatures]),
            ("base_model.model.model.layers.0.self_attn.kv_b_proj.lora_A.weight", [2, kvb.InFeatures], new float[2 * kvb.InFeatures]),
            ("base_model.model.model.layers.0.self_attn.kv_b_proj.lora_B.weight", [kvb.OutFeatures, 2], new float[2 * kvb.OutFeatures]),
        ]);
        var result = LoraAdapters.Load(model, _dir);
        Assert.Equal(5, result.Adapters["model.layers.0.self_attn.o_proj"].Rank);
        Assert.Equal(2f, result.Adapters["model.layers.0.self_attn.o_proj"].Scale);
        Assert.Equal(2f, result.Adapters["model.layers.0.self_attn.kv_b_proj"].Scale);
    }

    [Theory]
    [InlineData(0, new[] { "o_proj" }, 0f, "lora_r must be a positive integer")]
    [InlineData(4, new[] { "nothing_like_this" }, 0f, "'nothing_like_this' matches no Linear")]
    [InlineData(4, new[] { "o_proj" }, 1f, "lora_dropout must lie in [0, 1)")]
    public void BadSettingsAreOneClearLine(int r, string[] targets, float dropout, string message)
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var e = Assert.Throws<DeepSeekSharpException>(() => LoraAdapters.Apply(model, new LoraSettings(r, 8, targets, Dropout: dropout), 1));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
