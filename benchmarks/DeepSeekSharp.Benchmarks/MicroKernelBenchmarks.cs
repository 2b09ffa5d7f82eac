using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Benchmarks;

/// <summary>
/// The SGEMM micro-kernel with its operands already in cache: 16 packed 6-row A panels against 8 packed 64-wide B
/// strips of depth Kc (B strips of 32 KB fit L1 at Kc = 128; 128 KB at 512 stream from L2). One operation = one
/// 16-lane FMA (32 flops): GFLOP/s = 32 / (ns per operation). Compare with <see cref="FmaPeakBenchmarks"/> (what the
/// core can do at all) and with a whole GEMM (`dss bench gemm`), which also feeds the kernel from memory.
/// </summary>
public unsafe class MicroKernelBenchmarks
{
    private const int Panels = 16, Strips = 8, MR = 6, NR = 64, FmasPerStep = 24;
    private float* _a, _b, _c;

    [Params(128, 512)]
    public int Kc { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        if (!Avx512F.IsSupported) throw new PlatformNotSupportedException("AVX-512F");
        _a = Alloc(Panels * MR * Kc);
        _b = Alloc(Strips * NR * Kc);
        _c = Alloc(Panels * MR * Strips * NR);
    }

    private static float* Alloc(int count)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)count * sizeof(float), 64);
        for (int i = 0; i < count; i++) p[i] = 1e-3f * (i % 97);
        return p;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
    }

    /// <summary>Every Kc does the same 512 depth steps per panel and strip (repeating smaller Kc).</summary>
    [Benchmark(OperationsPerInvoke = Panels * Strips * FmasPerStep * 512)]
    public void InCache()
    {
        for (int rep = 0; rep < 512 / Kc; rep++)
            for (int s = 0; s < Strips; s++)
            {
                float* strip = _b + (nint)s * Kc * NR;
                for (int i = 0; i < Panels; i++)
                    SgemmMicroKernels.Tile(BlisSgemmKernel.Avx512, Kc, _a + (nint)i * MR * Kc, 1, MR, strip,
                        _c + (nint)i * MR * Strips * NR + s * NR, Strips * NR, MR, NR, 1f, 1f);
            }
    }
}
