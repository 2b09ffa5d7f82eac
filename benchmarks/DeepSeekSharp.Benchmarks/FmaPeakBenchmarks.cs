using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;

namespace DeepSeekSharp.Benchmarks;

/// <summary>
/// What one core's FMA units can do at all: 24 independent 16-lane FMA chains in registers, no memory traffic (the
/// roofline for <see cref="MicroKernelBenchmarks"/> and the whole step). One operation = one 16-lane FMA (32 flops):
/// GFLOP/s = 32 / (ns per operation).
/// </summary>
public class FmaPeakBenchmarks
{
    private const int Iterations = 1 << 20, Chains = 24;

    [Benchmark(OperationsPerInvoke = Iterations * Chains)]
    public float Fma512()
    {
        if (!Avx512F.IsSupported) throw new PlatformNotSupportedException("AVX-512F");
        return Chains24(Iterations, Vector512.Create(0.999f), Vector512.Create(1e-3f));
    }
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chains24(int iterations, Vector512<float> x, Vector512<float> y)
    {
        Vector512<float> c0 = x, c1 = y, c2 = x + y, c3 = x - y, c4 = x * y, c5 = y - x, c6 = x, c7 = y;
        Vector512<float> c8 = x, c9 = y, c10 = x + y, c11 = x - y, c12 = x * y, c13 = y - x, c14 = x, c15 = y;
        Vector512<float> c16 = x, c17 = y, c18 = x + y, c19 = x - y, c20 = x * y, c21 = y - x, c22 = x, c23 = y;
        for (int i = 0; i < iterations; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(c0, x, y); c1 = Avx512F.FusedMultiplyAdd(c1, x, y);
            c2 = Avx512F.FusedMultiplyAdd(c2, x, y); c3 = Avx512F.FusedMultiplyAdd(c3, x, y);
            c4 = Avx512F.FusedMultiplyAdd(c4, x, y); c5 = Avx512F.FusedMultiplyAdd(c5, x, y);
            c6 = Avx512F.FusedMultiplyAdd(c6, x, y); c7 = Avx512F.FusedMultiplyAdd(c7, x, y);
            c8 = Avx512F.FusedMultiplyAdd(c8, x, y); c9 = Avx512F.FusedMultiplyAdd(c9, x, y);
            c10 = Avx512F.FusedMultiplyAdd(c10, x, y); c11 = Avx512F.FusedMultiplyAdd(c11, x, y);
            c12 = Avx512F.FusedMultiplyAdd(c12, x, y); c13 = Avx512F.FusedMultiplyAdd(c13, x, y);
            c14 = Avx512F.FusedMultiplyAdd(c14, x, y); c15 = Avx512F.FusedMultiplyAdd(c15, x, y);
            c16 = Avx512F.FusedMultiplyAdd(c16, x, y); c17 = Avx512F.FusedMultiplyAdd(c17, x, y);
            c18 = Avx512F.FusedMultiplyAdd(c18, x, y); c19 = Avx512F.FusedMultiplyAdd(c19, x, y);
            c20 = Avx512F.FusedMultiplyAdd(c20, x, y); c21 = Avx512F.FusedMultiplyAdd(c21, x, y);
            c22 = Avx512F.FusedMultiplyAdd(c22, x, y); c23 = Avx512F.FusedMultiplyAdd(c23, x, y);
        }
        var sum = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + c12 + c13 + c14 + c15 + c16 + c17 + c18 + c19 + c20 + c21 + c22 + c23;
        return Vector512.Sum(sum);
    }
}
