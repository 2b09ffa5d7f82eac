using DeepSeekSharp.Autograd;
using DeepSeekSharp.Inference;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cuda;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Kernels.Cuda;

/// <summary>
/// Whole models with every tensor on the CUDA backend (kernels emulated on the CPU): <see cref="ComputeDevice"/> makes
/// the model, its ops and the cached decoder run there with no device code of their own. The real-GPU run of the same
/// fixture check is in docs/cuda.md.
/// </summary>
[Collection(nameof(ComputeDeviceCollection))]
public class ModelOnEmulatedGpuTests
{
    [Fact]
    public void FixtureLogitsLossAndGradientsMatchPyTorch()
    {
        var gpu = new EmulatedGpuRuntime();
        using var backend = new CudaBackend(gpu);
        string dir = TestPaths.Fixture("v3-tiny");
        using var expected = SafeTensorsReader.Open(Path.Combine(dir, "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        using (ComputeDevice.Use(backend))
        {
            var model = ModelCheckpoint.Load(dir);
            Assert.Same(backend, model.LmHead.Weight.Backend);
            float[] logits;
            using (GradMode.NoGrad()) logits = model.Forward(tokens, SequenceBatch.Training(1, tokens.Length)).Logits.Span.ToArray();
            var want = expected.ReadFloat32("logits");
            Assert.True(want.Zip(logits, (a, b) => Math.Abs(a - b)).Max() <= 1e-4);
            float w = expected.ReadFloat32("mtp_weight")[0];
            var loss = LanguageModelLoss.Compute(model, tokens, SequenceBatch.Training(1, tokens.Length), w, w > 0 ? 1 : 0);
            Backprop.Backward(loss.Total);
            Assert.InRange(Math.Abs(loss.Total.Span[0] - expected.ReadFloat32("loss")[0]), 0, 1e-4);
            foreach (var (name, p) in model.NamedParameters())
            {
                var g = expected.ReadFloat32("grad." + name);
                double scale = Math.Max(1e-6, g.Max(Math.Abs)), worst = 0;
                var got = p.Grad ?? new float[p.Length];
                for (int i = 0; i < g.Length; i++) worst = Math.Max(worst, Math.Abs(g[i] - got[i]) / scale);
                Assert.True(worst < 1e-3, $"grad.{name}: {worst:g3}");
            }
        }
        Assert.True(gpu.Launches.GetValueOrDefault("mla_attention_backward_key") > 0, "the attention backward ran on the device");
    }

    [Fact]
    public void CachedDecodingGivesTheCpuTokens()
    {
        string dir = TestPaths.Fixture("v3-tiny");
        int[] prompt = [5, 17, 3, 99, 42];
        var onCpu = new TextGenerator(new CachedDecoder(ModelCheckpoint.Load(dir)), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 6 });
        var gpu = new EmulatedGpuRuntime();
        using var backend = new CudaBackend(gpu);
        GenerationResult onGpu;
        using (ComputeDevice.Use(backend))
            onGpu = new TextGenerator(new CachedDecoder(ModelCheckpoint.Load(dir)), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 6 });
        Assert.Equal(onCpu.Tokens, onGpu.Tokens);
        Assert.True(gpu.Launches.GetValueOrDefault("gemm") > 0 && gpu.Launches.GetValueOrDefault("rmsnorm_forward") > 0);
    }

    [Fact]
    public void CachedDecodingWithALoraAdapterGivesTheCpuTokens()
    {
        // Adapters on every kind of Linear, kv_b_proj included (folded into W_UK/W_UV by the decoder), and a saved head.
        string dir = TestPaths.Fixture("v3-tiny"), adapter = Path.Combine(TestPaths.TempDir(), "adapter");
        DeepSeekSharp.Tests.FineTuning.LoraMergeTests.WriteAdapter(dir, adapter, bScale: 0.2f);
        DeepSeekModel Load()
        {
            var model = ModelCheckpoint.Load(dir);
            DeepSeekSharp.FineTuning.Lora.LoraInference.Attach(model, adapter);
            return model;
        }
        int[] prompt = [5, 17, 3, 99, 42];
        var onCpu = new TextGenerator(new CachedDecoder(Load()), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 6 });
        var gpu = new EmulatedGpuRuntime();
        using var backend = new CudaBackend(gpu);
        GenerationResult onGpu;
        using (ComputeDevice.Use(backend))
            onGpu = new TextGenerator(new CachedDecoder(Load()), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 6 });
        Assert.Equal(onCpu.Tokens, onGpu.Tokens);
        Assert.NotEqual(new TextGenerator(new CachedDecoder(ModelCheckpoint.Load(dir)), null).Generate(prompt, new GenerationOptions { MaxNewTokens = 6 }).Tokens, onCpu.Tokens);
        Assert.True(gpu.Launches.GetValueOrDefault("gemm") > 0);
    }
}

/// <summary>Tests that change <see cref="ComputeDevice"/> (process-wide) run alone.</summary>
[CollectionDefinition(nameof(ComputeDeviceCollection), DisableParallelization = true)]
public sealed class ComputeDeviceCollection;
