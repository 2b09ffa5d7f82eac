using DeepSeekSharp.Autograd;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Inference;

public class CompressedWeightTests
{
    [Theory]
    [InlineData(1, 300, 260, WeightStorage.Fp8Block)]
    [InlineData(7, 64, 40, WeightStorage.Fp8Block)]   // small: direct path
    [InlineData(3, 130, 520, WeightStorage.Bf16)]
    public void GemmWithCompressedWeightEqualsGemmWithTheWidenedWeight(int m, int n, int k, WeightStorage storage)
    {
        var rng = new Random(m + n + k);
        var a = Enumerable.Range(0, m * k).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var w = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var cw = CompressedWeight.Compress(w, n, k, storage);
        var wide = cw.Decompress();
        var want = new float[m * n];
        var got = new float[m * n];
        Sgemm.Multiply(null, false, true, m, n, k, 1f, a, k, wide, k, 0f, want, n);
        using var pool = new WorkerPool(2);
        Sgemm.MultiplyCompressedWeight(pool, m, a, k, cw, got, n);
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - got[i]) <= 1e-5f * (1 + Math.Abs(want[i])), $"{i}: {want[i]} vs {got[i]}");
        Assert.True(cw.Bytes <= n * k * (storage == WeightStorage.Bf16 ? 2 : 1.1));
    }

    [Fact]
    public void Fp8CheckpointDecodesWithCodesKeptInMemory()
    {
        string dir = TestPaths.Fixture("v3-tiny-fp8");
        var fp32 = ModelCheckpoint.Load(dir);          // dequantised on load
        var fp8 = InferenceWeights.Load(dir, WeightStorage.Fp8Block);
        Assert.All(InferenceWeights.CompressibleLinears(fp8).Where(l => l.Name.Contains("self_attn.o_proj")), l =>
        {
            Assert.True(l.Linear.Weight.IsMeta);        // no fp32 copy kept
            Assert.Equal(WeightStorage.Fp8Block, l.Linear.InferenceWeight!.Storage);
        });
        Assert.True(InferenceWeights.WeightBytes(fp8) < InferenceWeights.WeightBytes(fp32));
        int[] prompt = [5, 3, 8, 1, 9, 2, 7];
        var a = new CachedDecoder(fp32).Forward([(prompt, new CachedDecoder(fp32).NewCache())]).Logits.Span.ToArray();
        var d8 = new CachedDecoder(fp8);
        var b = d8.Forward([(prompt, d8.NewCache())]).Logits.Span.ToArray();
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) < 1e-4, $"logit {i}");
        // Greedy generation is the same too.
        var ga = new TextGenerator(new CachedDecoder(fp32), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 10 });
        var gb = new TextGenerator(d8, null).Generate(prompt, new GenerationOptions { MaxNewTokens = 10 });
        Assert.Equal(ga.Tokens, gb.Tokens);
    }

    [Fact]
    public void CompressedWeightsPassInputGradientsAndHoldNoWeightGradient()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v2-lite-tiny"));
        InferenceWeights.Compress(model, WeightStorage.Bf16);
        float[] noGrad;
        using (GradMode.NoGrad()) noGrad = model.Forward([1, 2, 3], SequenceBatch.Training(1, 3)).Logits.Span.ToArray();
        // With gradients recorded (a frozen base under an adapter), the same logits; the compressed weights stay
        // without fp32 storage and get no gradient.
        var logits = model.Forward([1, 2, 3], SequenceBatch.Training(1, 3)).Logits;
        Assert.Equal(noGrad, logits.Span.ToArray());
        var compressed = InferenceWeights.CompressibleLinears(model).Select(l => l.Linear).Where(l => l.InferenceWeight is not null).ToList();
        Assert.NotEmpty(compressed);
        Assert.All(compressed, l => Assert.True(l.Weight.IsMeta && l.Weight.Grad is null));
    }
}
