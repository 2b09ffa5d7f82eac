using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cuda;
using DeepSeekSharp.Kernels.Cuda.Native;

namespace DeepSeekSharp.Tests.Kernels.Cuda;

/// <summary>The CUDA backend's host-side logic, which needs no GPU: launch shapes, scale layouts, NVRTC inputs, argument packing.</summary>
public class CudaHostLogicTests
{
    [Fact]
    public void TheKernelSourceIsEmbeddedAndListsEveryEntryPoint()
    {
        var names = KernelSource.KernelNames(KernelSource.Text);
        Assert.Contains("rmsnorm_forward", names);
        Assert.Contains("mla_attention_backward_key", names);
        Assert.Contains("quantize_e4m3", names);
        Assert.Equal(names.Count, names.Distinct().Count());
        Assert.True(names.Count >= 18, $"{names.Count} kernels");
    }

    [Fact]
    public void CompileOptionsTargetTheDeviceAndKeepMultiplyAddsSeparate()
    {
        var options = KernelSource.CompileOptions(9, 0);
        Assert.Contains("--gpu-architecture=sm_90", options);
        Assert.Contains("--fmad=false", options);
        Assert.Throws<CudaException>(() => KernelSource.CompileOptions(6, 1));
    }

    [Fact]
    public void TheCacheKeyChangesWithSourceOptionsAndCompiler()
    {
        string a = KernelSource.CacheKey("src", ["-x"], "nvrtc 13.0");
        Assert.Equal(a, KernelSource.CacheKey("src", ["-x"], "nvrtc 13.0"));
        Assert.NotEqual(a, KernelSource.CacheKey("src2", ["-x"], "nvrtc 13.0"));
        Assert.NotEqual(a, KernelSource.CacheKey("src", ["-y"], "nvrtc 13.0"));
        Assert.NotEqual(a, KernelSource.CacheKey("src", ["-x"], "nvrtc 13.1"));
        Assert.Equal(64, a.Length);
    }

    [Fact]
    public void TheCacheFolderFollowsTheEnvironment()
    {
        Assert.Equal("/c", KernelSource.CacheFolder(v => v == "DSS_CUDA_CACHE" ? "/c" : null));
        Assert.Equal(Path.Combine("/x", "dss", "cuda"), KernelSource.CacheFolder(v => v == "XDG_CACHE_HOME" ? "/x" : null));
        Assert.Equal(Path.Combine("/home/u", ".cache", "dss", "cuda"), KernelSource.CacheFolder(v => v == "HOME" ? "/home/u" : null));
    }

    [Fact]
    public void LibrariesAreSearchedInTheExplicitFoldersFirstThenTheToolkitsAndWheels()
    {
        Assert.Equal(["/a", "/b"], NativeLibraries.ExplicitFolders(v => v == "DSS_CUDA_LIBRARY_PATH" ? "/a:/b" : null));
        var fallback = NativeLibraries.FallbackFolders(v => v == "CUDA_HOME" ? "/opt/cuda" : null).ToList();
        Assert.Equal("/opt/cuda/lib64", fallback[0]);
        Assert.Contains("/usr/local/cuda/lib64", fallback);
    }

    [Theory]
    [InlineData(1, 32)]
    [InlineData(40, 64)]
    [InlineData(256, 256)]
    [InlineData(7168, 256)]
    public void RowKernelsUseAWholeNumberOfWarps(int width, int threads)
    {
        Assert.Equal(threads, LaunchPlan.RowThreads(width));
        Assert.Equal(0, LaunchPlan.RowThreads(width) % 32);
    }

    [Fact]
    public void RowsBeyondOneGridAreSplitIntoLaunches()
    {
        var chunks = LaunchPlan.RowChunks(2 * LaunchPlan.MaxGridY + 5).ToList();
        Assert.Equal([(0, LaunchPlan.MaxGridY), (LaunchPlan.MaxGridY, LaunchPlan.MaxGridY), (2 * LaunchPlan.MaxGridY, 5)], chunks);
        Assert.Empty(LaunchPlan.RowChunks(0));
        Assert.Equal(4096u, LaunchPlan.ElementwiseGrid(1L << 40).X);
        Assert.Equal(1u, LaunchPlan.ElementwiseGrid(3).X);
    }

    [Fact]
    public void AttentionSharedMemoryHoldsTheRowsItReads()
    {
        var s = new MlaAttentionShape(2, 4096, 128, 128, 64, 128, 0.1f);
        Assert.Equal((4096 + 192) * 4, LaunchPlan.AttentionForwardShared(s));
        Assert.Equal((2 * 4096 + 128) * 4, LaunchPlan.AttentionQueryShared(s));
        Assert.Equal(new Dim3(4096, 128, 2), LaunchPlan.AttentionGrid(s));
        Assert.Throws<ArgumentException>(() => LaunchPlan.AttentionGrid(s with { Batch = 70000 }));
    }

    [Fact]
    public void Fp8ScalesAreRearrangedIntoCublasLtLayouts()
    {
        // Activation scales: for each 128-column block, the rows contiguous, rows padded to a multiple of 4.
        int m = 5, k = 300; // 3 k-blocks, rows padded to 8
        float[] rowMajor = Enumerable.Range(0, m * 3).Select(i => (float)i).ToArray();
        var cublas = Fp8ScaleLayout.ActivationScales(rowMajor, m, k);
        Assert.Equal(3 * 8, cublas.Length);
        Assert.Equal(rowMajor[1 * 3 + 2], cublas[2 * 8 + 1]);
        Assert.Equal(1f, cublas[0 * 8 + 6]); // padding
        // Weight scales: row-major blocks with the k-block count padded to a multiple of 4.
        int n = 300;
        float[] blocks = Enumerable.Range(0, 3 * 3).Select(i => (float)i).ToArray();
        var w = Fp8ScaleLayout.WeightScales(blocks, n, k);
        Assert.Equal(3 * 4, w.Length);
        Assert.Equal(blocks[2 * 3 + 1], w[2 * 4 + 1]);
        Assert.Equal(1f, w[0 * 4 + 3]);
    }

    [Fact]
    public unsafe void KernelArgumentsPointAtAlignedCopiesOfEachValue()
    {
        using var args = new KernelArguments();
        var shape = new MlaKernelShape(1, 2, 3, 4, 5, 6, 0.5f);
        args.Reset().Add(new DevicePtr(0x1234)).Add(7).Add(2.5f).Add(9L).Add(shape).Add((byte)3);
        Assert.Equal(6, args.Count);
        Assert.Equal(0x1234UL, *(ulong*)args.Pointers[0]);
        Assert.Equal(7, *(int*)args.Pointers[1]);
        Assert.Equal(2.5f, *(float*)args.Pointers[2]);
        Assert.Equal(9L, *(long*)args.Pointers[3]);
        Assert.Equal(0, (long)args.Pointers[3] % 8);
        Assert.Equal(shape, *(MlaKernelShape*)args.Pointers[4]);
        Assert.Equal(28, Marshal.SizeOf<MlaKernelShape>()); // kernels.cu's DssMla: six ints and a float
        Assert.Equal((byte)3, *(byte*)args.Pointers[5]);
        args.Reset().Add(1);
        Assert.Equal(1, args.Count);
    }

    [Fact]
    public void WithoutADriverOpeningTheGpuSaysSoInOneLine()
    {
        if (NativeLibrary.TryLoad("libcuda.so.1", out var handle))
        {
            // A machine with a driver: opening must work (or fail with a CUDA error, never a crash).
            NativeLibrary.Free(handle);
            try { CudaRuntime.Open().Dispose(); }
            catch (CudaException) { }
            return;
        }
        var e = Assert.Throws<CudaException>(() => CudaRuntime.Open());
        Assert.Contains("no CUDA driver", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void APackedMatrixIsOnlyMultipliedByTheBackendThatPackedIt()
    {
        var cpu = new DeepSeekSharp.Kernels.Cpu.CpuBackend(1);
        using var gpu = new CudaBackend(new EmulatedGpuRuntime());
        float[] b = new float[4 * 3], a = new float[2 * 4], c = new float[2 * 3];
        using var packedOnCpu = cpu.PackGemmB(false, b, 3, 3, 4);
        using var packedOnGpu = gpu.PackGemmB(false, b, 3, 3, 4);
        Assert.Throws<ArgumentException>(() => gpu.GemmPackedB(false, 2, 1f, a, 4, packedOnCpu, 0f, c, 3));
        Assert.Throws<ArgumentException>(() => cpu.GemmPackedB(false, 2, 1f, a, 4, packedOnGpu, 0f, c, 3));
    }
}
