using System.Text.Json.Nodes;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// LoRA against the independent PyTorch reference (tools/reference/lora_reference.py, float64, HF PEFT's rules written
/// out there): the reference wrote a PEFT adapter folder for the v3-tiny / v2-lite-tiny base fixtures (random non-zero A
/// and B on every attention projection, the dense MLP, shared and routed experts; a rank_pattern and alpha_pattern entry,
/// rsLoRA in the V2 case) with its logits, loss and the gradient of every lora_A / lora_B. We load that folder with
/// <see cref="LoraAdapters.Load"/> and must reproduce all of them.
/// </summary>
public class LoraReferenceTests
{
    public static TheoryData<string> Cases => new() { "lora-v3-tiny", "lora-v2-lite-tiny" };

    private sealed record Loaded(DeepSeekModel Model, LoraApplyResult Lora, SafeTensorsReader Expected, int[] Tokens, string AdapterDir) : IDisposable
    {
        public void Dispose() => Expected.Dispose();
    }

    /// <summary>The base fixture named by the adapter's base_model_name_or_path, with the reference's adapter loaded.</summary>
    private static Loaded Load(string name)
    {
        string dir = TestPaths.Fixture(name);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LoraAdapters.ConfigFile)))!;
        string baseName = Path.GetFileName(config["base_model_name_or_path"]!.GetValue<string>());
        var model = ModelCheckpoint.Load(TestPaths.Fixture(baseName));
        var lora = LoraAdapters.Load(model, dir);
        var expected = SafeTensorsReader.Open(Path.Combine(dir, "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        return new Loaded(model, lora, expected, tokens, dir);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LogitsWithTheReferencesAdapterMatchPyTorch(string name)
    {
        using var c = Load(name);
        float[] logits;
        using (GradMode.NoGrad()) logits = c.Model.Forward(c.Tokens, SequenceBatch.Training(1, c.Tokens.Length)).Logits.Span.ToArray();
        var want = c.Expected.ReadFloat32("logits");
        Assert.Equal(want.Length, logits.Length);
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - logits[i]) <= 1e-4, $"logits[{i}]: want {want[i]}, got {logits[i]}");

        // The comparison is not vacuous: the adapters move the logits far beyond the tolerance.
        var baseLogits = c.Expected.ReadFloat32("base_logits");
        Assert.True(want.Zip(baseLogits, (a, b) => Math.Abs(a - b)).Max() > 1, "the reference's adapters should change the logits");
        using var adapter = SafeTensorsReader.Open(Path.Combine(c.AdapterDir, LoraAdapters.WeightsFile));
        Assert.Equal(adapter.Tensors.Count, 2 * c.Lora.Adapters.Count);
    }

    [Fact]
    public void RankPatternAlphaPatternAndRsloraGiveThePeftScales()
    {
        using (var v3 = Load("lora-v3-tiny"))
        {
            var a = v3.Lora.Adapters;
            Assert.Equal((4, 1f), (a["model.layers.1.self_attn.kv_b_proj"].Rank, a["model.layers.1.self_attn.kv_b_proj"].Scale));  // rank_pattern 4, α 4
            Assert.Equal((2, 6f), (a["model.layers.0.self_attn.o_proj"].Rank, a["model.layers.0.self_attn.o_proj"].Scale));      // alpha_pattern 12
            Assert.Equal((2, 2f), (a["model.layers.2.mlp.experts.5.up_proj"].Rank, a["model.layers.2.mlp.experts.5.up_proj"].Scale));
        }
        using var v2 = Load("lora-v2-lite-tiny");
        var b = v2.Lora.Adapters;
        Assert.Equal(6 / MathF.Sqrt(3), b["model.layers.0.self_attn.q_proj"].Scale, 6);               // rsLoRA: α/√r
        Assert.Equal(2 / MathF.Sqrt(3), b["model.layers.1.mlp.shared_experts.down_proj"].Scale, 6);  // alpha_pattern 2
    }

    /// <summary>Both routed-expert paths, as in ReferenceParityTests: the grouped GEMMs (adapters inside the grouped op) and one module per expert.</summary>
    public static TheoryData<string, bool> GradientCases
    {
        get
        {
            var data = new TheoryData<string, bool>();
            foreach (var name in new[] { "lora-v3-tiny", "lora-v2-lite-tiny" })
                foreach (bool grouped in new[] { true, false }) data.Add(name, grouped);
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(GradientCases))]
    public void LossAndEveryLoraGradientMatchPyTorch(string name, bool groupedExperts)
    {
        using var c = Load(name);
        foreach (var moe in c.Model.NamedModules().Select(m => m.Module).OfType<Moe>()) moe.GroupedExperts = groupedExperts;
        // The reference's loss is the mean next-token cross-entropy of the main head; our summed loss divided by the
        // count of targets (the divisor a training step passes) is that mean.
        long[] divisors = LanguageModelLoss.CountTargets(c.Tokens, SequenceBatch.Training(1, c.Tokens.Length), 0);
        Assert.Equal(c.Tokens.Length - 1, divisors[0]);
        long groupedBefore = DeepSeekSharp.Autograd.Ops.GroupedExpertsOp.Calls;
        var loss = LanguageModelLoss.Compute(c.Model, c.Tokens, SequenceBatch.Training(1, c.Tokens.Length), 0, 0, divisors: divisors);
        Backprop.Backward(loss.Total);
        // Other tests may run the op concurrently, so only "at least one layer per MoE layer" is certain when grouped.
        int moeLayers = c.Model.Config.MoeLayerCount;
        if (groupedExperts) Assert.True(DeepSeekSharp.Autograd.Ops.GroupedExpertsOp.Calls - groupedBefore >= moeLayers, "the adapted experts should run grouped");
        Assert.InRange(Math.Abs(loss.Total.Data[0] - c.Expected.ReadFloat32("loss")[0]), 0, 1e-4);

        int checkedGrads = 0, zeroGrads = 0;
        foreach (var (pname, p) in c.Model.NamedParameters())
        {
            if (!p.RequiresGrad)
            {
                Assert.Null(p.Grad);
                continue;
            }
            Assert.Contains(".lora_", pname);
            var want = c.Expected.ReadFloat32("grad.base_model.model." + pname);
            var got = p.Grad ?? new float[p.Length];
            double scale = want.Max(Math.Abs);
            if (scale == 0)
            {
                // an adapted routed expert no token chose
                Assert.All(got, g => Assert.Equal(0f, g));
                zeroGrads++;
            }
            else
            {
                double worst = 0;
                for (int i = 0; i < want.Length; i++) worst = Math.Max(worst, Math.Abs(want[i] - got[i]) / scale);
                Assert.True(worst < 1e-3, $"{pname}: max error {worst:g3} relative to max |grad| {scale:g3}");
            }
            checkedGrads++;
        }
        Assert.Equal(c.Expected.Tensors.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)), checkedGrads);
        Assert.InRange(zeroGrads, 1, checkedGrads / 4);
    }
}
