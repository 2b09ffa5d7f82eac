using DeepSeekSharp.Autograd;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Fp8;

public class Fp8CheckpointTests
{
    [Fact]
    public void QuantizeReproducesTheReferenceFp8CheckpointBitForBit()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "fp8");
        Fp8Checkpoint.Quantize(TestPaths.Fixture("v3-tiny"), outDir);
        using var ours = SafeTensorsReader.Open(Path.Combine(outDir, "model.safetensors"));
        using var reference = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("v3-tiny-fp8"), "model.safetensors"));
        int fp8 = 0;
        foreach (var e in reference.Tensors)
        {
            Assert.True(ours.TryGet(e.Name, out var mine), e.Name);
            Assert.Equal(e.DType, mine.DType);
            Assert.Equal(e.Shape, mine.Shape);
            Assert.True(reference.GetBytes(e).SequenceEqual(ours.GetBytes(mine)), $"{e.Name} differs from the PyTorch reference quantiser");
            if (e.DType == DType.F8E4M3) fp8++;
        }
        Assert.True(fp8 > 20);
        // The quantised checkpoint gives the reference logits of the dequantised model.
        var model = ModelCheckpoint.Load(outDir);
        using var expected = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("v3-tiny-fp8"), "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        float[] logits;
        using (GradMode.NoGrad()) logits = model.Forward(tokens, SequenceBatch.Training(1, tokens.Length)).Logits.Span.ToArray();
        var want = expected.ReadFloat32("logits");
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - logits[i]) < 1e-4, $"logit {i}");
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("fp8")]
    public void DssForwardRunsTheFp8CheckpointDequantisedOrWithFp8WeightsInMemory(string weights)
    {
        string dir = TestPaths.Fixture("v3-tiny-fp8");
        using var expected = SafeTensorsReader.Open(Path.Combine(dir, "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        string output = Path.Combine(TestPaths.TempDir(), "logits.safetensors");
        var r = DeepSeekSharp.Tests.Cli.DssProcess.Run("forward", "--model", dir, "--tokens", string.Join(',', tokens), "--weights", weights, "--out", output);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var got = SafeTensorsReader.Open(output);
        var want = expected.ReadFloat32("logits");
        var logits = got.ReadFloat32("logits");
        // The PyTorch reference's logits of the dequantised model, either way.
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - logits[i]) < 1e-4, $"logit {i}: {want[i]} vs {logits[i]}");
        if (weights == "fp8")
        {
            // Kept as codes: the quantised Linears take a quarter of their fp32 bytes.
            var model = DeepSeekSharp.Inference.InferenceWeights.Load(dir, WeightStorage.Fp8Block);
            var linears = DeepSeekSharp.Inference.InferenceWeights.CompressibleLinears(model).Select(l => l.Linear).Where(l => l.InferenceWeight is not null).ToList();
            Assert.NotEmpty(linears);
            long fp32Bytes = linears.Sum(l => 4L * l.InFeatures * l.OutFeatures), fp8Bytes = linears.Sum(l => l.InferenceWeight!.Bytes);
            Assert.InRange(fp8Bytes, fp32Bytes / 4, fp32Bytes / 4 + fp32Bytes / 50); // codes plus one fp32 scale per 128x128 block
        }
    }

    [Fact]
    public void DequantizeRoundTripKeepsTheFp8ModelsWeightsAndRefusesDoubleQuantisation()
    {
        string dir = TestPaths.TempDir();
        string deq = Path.Combine(dir, "deq");
        Fp8Checkpoint.Dequantize(TestPaths.Fixture("v3-tiny-fp8"), deq, DType.F32);
        Assert.DoesNotContain("quantization_config", File.ReadAllText(Path.Combine(deq, "config.json")));
        var a = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny-fp8"));
        var b = ModelCheckpoint.Load(deq);
        foreach (var ((name, x), (_, y)) in a.NamedParameters().Zip(b.NamedParameters())) Assert.True(x.Span.SequenceEqual(y.Span), name);
        // Re-quantising the dequantised weights gives the same codes (FP8 values are fixed points of the quantiser).
        string re = Path.Combine(dir, "re");
        Fp8Checkpoint.Quantize(deq, re);
        using var r1 = SafeTensorsReader.Open(Path.Combine(re, "model.safetensors"));
        using var r0 = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("v3-tiny-fp8"), "model.safetensors"));
        foreach (var e in r0.Tensors.Where(t => t.DType == DType.F8E4M3))
            Assert.True(r0.GetBytes(e).SequenceEqual(r1.GetBytes(r1.Get(e.Name))), e.Name);
        var err = Assert.ThrowsAny<DeepSeekSharpException>(() => Fp8Checkpoint.Quantize(TestPaths.Fixture("v3-tiny-fp8"), Path.Combine(dir, "x")));
        Assert.Contains("already quantised", err.Message);
    }

    [Fact]
    public void NaNWeightsAreRefusedWithTheTensorName()
    {
        var x = new float[] { 1, 2, float.NaN, 4 };
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => Fp8Quantizer.QuantizeBlocks(x, 2, 2, "w.weight"));
        Assert.Contains("w.weight", e.Message);
    }

    [Fact]
    public void BlockScalesFollowTheRecipeIncludingPartialAndZeroBlocks()
    {
        int rows = 130, cols = 200;
        var w = new float[rows * cols];
        var rng = new Random(1);
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5);
        for (int r = 128; r < 130; r++) for (int c = 128; c < 200; c++) w[r * cols + c] = 0; // an all-zero partial block
        var q = Fp8Quantizer.QuantizeBlocks(w, rows, cols);
        Assert.Equal(4, q.Scales.Length);
        Assert.Equal(1f, q.Scales[3]);
        float amax = 0;
        for (int r = 0; r < 128; r++) for (int c = 0; c < 128; c++) amax = Math.Max(amax, Math.Abs(w[r * cols + c]));
        Assert.Equal(amax / 448f, q.Scales[0]);
        var back = q.Dequantize();
        for (int i = 0; i < w.Length; i++)
        {
            float s = q.Scales[(i / cols) / 128 * 2 + (i % cols) / 128];
            // E4M3 keeps 3 mantissa bits: relative error ≤ 2^-4, absolute ≤ half the subnormal step below 2^-6.
            Assert.True(Math.Abs(back[i] - w[i]) <= Math.Max(Math.Abs(w[i]) / 16, s * MathF.Pow(2, -10)) + 1e-12, $"element {i}");
        }
    }

    [Fact]
    public void PromotionKeepsAccumulationErrorFlatWhileALimitedAccumulatorDrifts()
    {
        var rows = Fp8ErrorStudy.Run([256, 4096]);
        Assert.True(rows[0].PromotedAccumulationOnly < 1e-5 && rows[1].PromotedAccumulationOnly < 1e-5);
        Assert.True(rows[1].LimitedAccumulationOnly > 5 * rows[0].LimitedAccumulationOnly, "14-bit accumulation error must grow with K");
        Assert.True(rows[1].LimitedAccumulator > 2 * rows[1].Promoted);
    }
}
