using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Cuda;

namespace DeepSeekSharp.Tests.Kernels.Cuda;

/// <summary>
/// The CUDA backend's every operation, forward and backward, against the CPU backend on an emulated GPU: the kernels
/// of kernels.cu (the source NVRTC compiles on a real device) and all of the backend's staging, launch planning and
/// argument passing run here; only the driver calls and cuBLASLt do not (dss cuda check runs the same comparison on a
/// real GPU).
/// </summary>
public class CudaBackendOnEmulatorTests
{
    [Fact]
    public void EveryOperationMatchesTheCpuBackend()
    {
        var gpu = new EmulatedGpuRuntime();
        using var backend = new CudaBackend(gpu);
        var results = new BackendComparison(backend, new CpuBackend(2), seed: 3).RunAll();
        foreach (var r in results) TestContext.Current.TestOutputHelper?.WriteLine($"{r.Name}: error {r.Error:g3} (tolerance {r.Tolerance:g3}), {r.Milliseconds:F0} ms");
        var failed = results.Where(r => !r.Passed).Select(r => $"{r.Name}: error {r.Error:g3} > {r.Tolerance:g3} {r.Failure}").ToList();
        Assert.True(failed.Count == 0, string.Join("\n", failed));
        Assert.True(results.Count >= 25, $"only {results.Count} cases ran");
        // Every kernel of the source ran at least once (a kernel nobody launches is untested).
        foreach (string kernel in KernelSource.KernelNames(KernelSource.Text).Except(["axpby_f32", "f32_to_bf16", "transpose_f32"]))
            Assert.True(gpu.Launches.GetValueOrDefault(kernel) > 0, $"{kernel} never ran");
    }

    [Fact]
    public void AKernelThatDoesNotComputeTheSameThingFails()
    {
        // The comparison itself can fail: a backend whose RMSNorm is off by one ulp-scale bias is caught.
        var gpu = new EmulatedGpuRuntime();
        using var backend = new CudaBackend(gpu);
        var wrong = new BiasedRmsNorm(backend);
        var results = new BackendComparison(wrong, new CpuBackend(1), seed: 4).RunAll();
        Assert.Contains(results, r => r.Name.StartsWith("rmsnorm forward", StringComparison.Ordinal) && !r.Passed);
    }

    [Fact]
    public void TheArenaSettlesAndEverythingIsFreed()
    {
        var gpu = new EmulatedGpuRuntime();
        var backend = new CudaBackend(gpu);
        var rng = new Random(5);
        float[] x = Enumerable.Range(0, 4096).Select(_ => (float)rng.NextDouble()).ToArray(), w = new float[64], y = new float[4096], r = new float[64];
        for (int i = 0; i < 3; i++) backend.RmsNormForward(x, w, 1e-6f, 64, y, r);
        long settled = gpu.LiveBytes;
        for (int i = 0; i < 3; i++) backend.RmsNormForward(x, w, 1e-6f, 64, y, r);
        Assert.Equal(settled, gpu.LiveBytes);
        backend.Dispose();
        Assert.Equal(0, gpu.LiveBytes);
    }

    /// <summary>A deliberately wrong backend: the CUDA one with every RMSNorm output nudged.</summary>
    private sealed class BiasedRmsNorm(CudaBackend inner) : ForwardingBackend(inner)
    {
        public override void RmsNormForward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, int d, Span<float> y, Span<float> invRms)
        {
            base.RmsNormForward(x, w, eps, d, y, invRms);
            y[0] += 1e-3f * Math.Max(1f, Math.Abs(y[0]));
        }
    }
}
