using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Cpu;
using static DeepSeekSharp.Tests.Kernels.Blis.GemmTestHelper;

namespace DeepSeekSharp.Tests.Kernels.Blis;

public sealed class BlisSgemmTests : IDisposable
{
    private readonly WorkerPool _pool2 = new(2);

    public void Dispose() => _pool2.Dispose();

    // (m, n, k): tiny (direct path), MR/NR/MC/KC/NC block boundaries, odd sizes.
    private static readonly (int M, int N, int K)[] s_shapes =
    [
        (1, 1, 1), (1, 7, 5), (7, 1, 5), (5, 6, 7), (6, 64, 5), (33, 1, 2000), (1, 300, 200),
        (7, 65, 63), (13, 129, 64), (6, 64, 128), (95, 63, 65), (96, 64, 96), (97, 127, 97),
        (127, 128, 129), (129, 65, 33), (12, 200, 511), (25, 70, 512), (31, 67, 513),
        (200, 130, 300), (64, 2100, 20), (103, 64, 1100),
        // Narrow edge strips (the 6×16 and 6×32 AVX-512 edge kernels), odd depth for the 6×16 kernel's two-step loop.
        (40, 16, 301), (50, 90, 77), (61, 32, 250), (19, 81, 64),
        // Edge tiles written in place: a 48-wide strip (masked columns) over 6k+4 rows, a 7-column strip over 6k+1 rows.
        (64, 48, 40), (13, 7, 9),
    ];

    public static TheoryData<bool, bool, int, int, int, bool> ShapeCases()
    {
        var data = new TheoryData<bool, bool, int, int, int, bool>();
        foreach (var (m, n, k) in s_shapes)
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    data.Add(ta, tb, m, n, k, (m + n + k) % 2 == 0); // alternate null pool / 2-thread pool
        return data;
    }

    [Theory]
    [MemberData(nameof(ShapeCases))]
    public void MatchesReference(bool transA, bool transB, int m, int n, int k, bool threaded)
    {
        Check(Create(transA, transB, m, n, k, pad: 0, seed: 1), 1f, 0f, threaded ? _pool2 : null);
        Check(Create(transA, transB, m, n, k, pad: 3, seed: 2), 1f, 1f, threaded ? null : _pool2);
    }

    public static TheoryData<bool, bool, float, float> ScaleCases()
    {
        var data = new TheoryData<bool, bool, float, float>();
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, 1f), (-2f, 0.25f), (1.5f, -1f), (0f, 0.5f), (0f, 0f) })
                    data.Add(ta, tb, alpha, beta);
        return data;
    }

    [Theory]
    [MemberData(nameof(ScaleCases))]
    public void AlphaBetaVariants(bool transA, bool transB, float alpha, float beta)
    {
        foreach (var (m, n, k) in new[] { (3, 5, 4), (50, 70, 600), (100, 129, 40) })
        {
            bool nan = beta == 0f;
            Check(Create(transA, transB, m, n, k, pad: 5, seed: 3, nanC: nan), alpha, beta, null);
            Check(Create(transA, transB, m, n, k, pad: 1, seed: 4, nanC: nan), alpha, beta, _pool2);
        }
    }

    [Theory]
    [InlineData("Scalar")]
    [InlineData("Avx2")]
    [InlineData("Avx512")]
    public void FallbackKernelsMatchReference(string kernelName)
    {
        var kernel = Enum.Parse<BlisSgemmKernel>(kernelName);
        if (kernel == BlisSgemmKernel.Avx512 && !Avx512F.IsSupported) return;
        if (kernel == BlisSgemmKernel.Avx2 && !(Avx2.IsSupported && Fma.IsSupported)) return;
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (var (m, n, k) in new[] { (13, 70, 65), (97, 128, 40), (8, 65, 600), (20, 16, 33), (30, 90, 77) })
                {
                    Check(Create(ta, tb, m, n, k, pad: 2, seed: 5, nanC: true), 0.75f, 0f, _pool2, kernel);
                    Check(Create(ta, tb, m, n, k, pad: 0, seed: 6), 1f, -0.5f, null, kernel);
                }
    }

    [Fact]
    public void EmptyDimensions()
    {
        // k = 0: C = beta * C; beta = 0 clears even NaN.
        var p = Create(false, false, 4, 5, 0, nanC: true);
        Check(p, 1f, 0f, null);
        Assert.All(p.C.Length > 0 ? CloneAndRun(p, 0f) : [], v => Assert.Equal(0f, v));
        Check(Create(true, true, 4, 5, 0), 1f, 2f, _pool2);
        // m = 0 or n = 0: nothing happens.
        BlisSgemm.Multiply(null, false, false, 0, 5, 3, 1f, new float[15], 3, new float[15], 5, 0f, Span<float>.Empty, 5);
        BlisSgemm.Multiply(null, false, false, 5, 0, 3, 1f, new float[15], 3, ReadOnlySpan<float>.Empty, 1, 0f, Span<float>.Empty, 1);
    }

    private static float[] CloneAndRun(Problem p, float beta)
    {
        float[] c = (float[])p.C.Clone();
        BlisSgemm.Multiply(null, p.TransA, p.TransB, p.M, p.N, p.K, 1f, p.A, p.Lda, p.B, p.Ldb, beta, c, p.Ldc);
        return c;
    }

    [Fact]
    public void SpanOverloadValidatesLengthsAndStrides()
    {
        float[] a = new float[6], b = new float[6], c = new float[4];
        Assert.Throws<ArgumentException>(() => BlisSgemm.Multiply(null, false, false, 2, 2, 3, 1f, a.AsSpan(0, 5), 3, b, 2, 0f, c, 2));
        Assert.Throws<ArgumentException>(() => BlisSgemm.Multiply(null, false, true, 2, 2, 3, 1f, a, 3, b.AsSpan(0, 5), 3, 0f, c, 2));
        Assert.Throws<ArgumentException>(() => BlisSgemm.Multiply(null, false, false, 2, 2, 3, 1f, a, 3, b, 2, 0f, c.AsSpan(0, 3), 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => BlisSgemm.Multiply(null, false, false, 2, 2, 3, 1f, a, 2, b, 2, 0f, c, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => BlisSgemm.Multiply(null, true, false, 2, 2, 3, 1f, a, 1, b, 2, 0f, c, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => BlisSgemm.Multiply(null, false, false, -1, 2, 3, 1f, a, 3, b, 2, 0f, c, 2));
        BlisSgemm.Multiply(null, false, false, 2, 2, 3, 1f, a, 3, b, 2, 0f, c, 2); // exact lengths are fine
    }

    [Fact]
    public void ConcurrentCallersSharingAPoolAgree()
    {
        var problems = Enumerable.Range(0, 4).Select(i => Create(i % 2 == 0, i / 2 == 1, 150, 140, 130, seed: 10 + i)).ToArray();
        Parallel.For(0, 16, i => Check(problems[i % 4], 1f, 0.5f, _pool2));
    }

    [Fact]
    public void ReentrantCallFromInsideAPoolTaskRunsInline()
    {
        var problems = Enumerable.Range(0, 6).Select(i => Create(false, true, 100, 90, 80, seed: 20 + i)).ToArray();
        _pool2.Run(problems.Length, i => Check(problems[i], 1f, 0f, _pool2));
    }
}
