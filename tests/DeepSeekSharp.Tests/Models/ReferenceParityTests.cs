using DeepSeekSharp.Autograd;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Models;

/// <summary>
/// Logits, MTP logits, routing, loss and every gradient against the independent PyTorch reference
/// (tools/reference, float64) on small V3-style and V2-style checkpoints.
/// </summary>
public class ReferenceParityTests
{
    public static TheoryData<string> Cases => new() { "v3-tiny", "v3-tiny-fp8", "v2-lite-tiny", "v2-group-tiny" };

    private static (DeepSeekModel Model, SafeTensorsReader Expected, int[] Tokens) Load(string name)
    {
        string dir = TestPaths.Fixture(name);
        var model = ModelCheckpoint.Load(dir);
        var expected = SafeTensorsReader.Open(Path.Combine(dir, "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        return (model, expected, tokens);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LogitsAndRoutingMatchPyTorch(string name)
    {
        var (model, expected, tokens) = Load(name);
        using var _ = expected;
        bool mtp = expected.TryGet("mtp_logits", out var _);
        ModelOutput output;
        using (GradMode.NoGrad()) output = model.Forward(tokens, SequenceBatch.Training(1, tokens.Length), mtp ? 1 : 0);

        AssertClose(expected.ReadFloat32("logits"), output.Logits.Span.ToArray(), 1e-4, "logits");
        if (mtp)
        {
            var want = expected.ReadFloat32("mtp_logits");
            AssertClose(want, output.MtpLogits[0].Span[..want.Length].ToArray(), 1e-4, "mtp_logits");
        }

        var blocks = model.Layers.Select((b, l) => (l, b)).Concat(model.MtpModules.Select((m, k) => (model.Config.NumHiddenLayers + k, m.Block)));
        foreach (var (layer, block) in blocks)
        {
            if (block.Moe is null || !expected.TryGet($"route.layer{layer}", out var _)) continue;
            long[] want = expected.ReadInt64($"route.layer{layer}");
            int k = block.Moe.Gate.TopK, rows = want.Length / k;
            int[] got = block.Moe.Gate.LastIndices;
            for (int t = 0; t < rows; t++)
            {
                var g = got.AsSpan(t * k, k).ToArray();
                Array.Sort(g);
                Assert.Equal(want.AsSpan(t * k, k).ToArray().Select(x => (int)x), g);
            }
        }
    }

    /// <summary>Both routed-expert paths: grouped GEMMs (the default for fp32 experts) and one module call per expert.</summary>
    public static TheoryData<string, bool> GradientCases
    {
        get
        {
            var data = new TheoryData<string, bool>();
            foreach (var name in new[] { "v3-tiny", "v3-tiny-fp8", "v2-lite-tiny", "v2-group-tiny" })
                foreach (bool grouped in new[] { true, false }) data.Add(name, grouped);
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(GradientCases))]
    public void LossAndAllGradientsMatchPyTorch(string name, bool groupedExperts)
    {
        var (model, expected, tokens) = Load(name);
        using var _ = expected;
        var moes = model.NamedModules().Select(m => m.Module).OfType<Moe>().ToList();
        Assert.NotEmpty(moes);
        foreach (var moe in moes) moe.GroupedExperts = groupedExperts;
        long groupedBefore = DeepSeekSharp.Autograd.Ops.GroupedExpertsOp.Calls;
        float w = expected.ReadFloat32("mtp_weight")[0];
        var loss = LanguageModelLoss.Compute(model, tokens, SequenceBatch.Training(1, tokens.Length), w, w > 0 ? 1 : 0);
        Backprop.Backward(loss.Total);
        Assert.InRange(Math.Abs(loss.Total.Data[0] - expected.ReadFloat32("loss")[0]), 0, 1e-4);
        long groupedCalls = DeepSeekSharp.Autograd.Ops.GroupedExpertsOp.Calls - groupedBefore;
        if (groupedExperts) Assert.True(groupedCalls >= moes.Count, $"{groupedCalls} grouped expert calls for {moes.Count} MoE layers");

        int checkedGrads = 0;
        foreach (var (pname, p) in model.NamedParameters())
        {
            var want = expected.ReadFloat32("grad." + pname);
            var got = p.Grad ?? new float[p.Length];
            double scale = Math.Max(1e-6, want.Max(Math.Abs));
            double worst = 0;
            for (int i = 0; i < want.Length; i++) worst = Math.Max(worst, Math.Abs(want[i] - got[i]) / scale);
            Assert.True(worst < 1e-3, $"grad.{pname}: max error {worst:g3} relative to max |grad| {scale:g3}");
            checkedGrads++;
        }
        int expectedGrads = expected.Tensors.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal));
        Assert.Equal(expectedGrads, checkedGrads);
    }

    [Fact]
    public void Fp8CheckpointGivesTheDequantisedModelsLogits()
    {
        // The FP8 fixture stores the same weights block-quantised; its expected logits come from the dequantised weights,
        // and they differ measurably from the fp32 original's (so the comparison above is not vacuous).
        using var fp8 = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("v3-tiny-fp8"), "expected.safetensors"));
        using var fp32 = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("v3-tiny"), "expected.safetensors"));
        var a = fp8.ReadFloat32("logits");
        var b = fp32.ReadFloat32("logits");
        double diff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(diff > 1e-4, $"FP8 quantisation should change logits, max diff {diff}");
    }

    private static void AssertClose(float[] want, float[] got, double tol, string what)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= tol, $"{what}[{i}]: want {want[i]}, got {got[i]}");
    }
}
