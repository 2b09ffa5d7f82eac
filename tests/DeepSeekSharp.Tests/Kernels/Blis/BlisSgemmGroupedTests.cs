using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels.Blis;

/// <summary>
/// The grouped GEMM (one call, many products of different shapes) against the reference GEMM run group by group:
/// every transpose case, uneven and empty groups, depth beyond one KC block, edge strips, gathered B rows, alpha/beta,
/// on one thread and on two (where tasks split groups by rows and columns).
/// </summary>
public sealed class BlisSgemmGroupedTests : IDisposable
{
    private readonly CpuBackend _one = new(1), _two = new(2);

    public void Dispose()
    {
        _one.Pool.Dispose();
        _two.Pool.Dispose();
    }

    // (m, n, k) per group: an expert-like mix with an empty group, a k = 0 group, a deep one (k > KC = 512, two
    // depth blocks), a wide one with a 64-column edge strip, one large enough to be split over both workers, and
    // decoding-sized ones (≤ 4 rows: against a transposed B they stream it instead of packing).
    private static readonly (int M, int N, int K)[] Shapes =
        [(37, 70, 25), (0, 70, 25), (5, 3, 0), (130, 96, 700), (9, 200, 64), (300, 130, 90), (1, 1, 1), (2, 150, 300), (4, 64, 513)];

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void EveryGroupMatchesTheReference(bool transA, bool transB)
    {
        foreach (var (alpha, beta, backend) in new[] { (1f, 0f, _one), (0.5f, 1.5f, _two), (1f, 1f, _two) })
            Check(transA, transB, alpha, beta, backend, gatherB: false);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GatheredBRowsMatchTheReferenceOnTheGatheredCopy(bool transA)
    {
        Check(transA, false, 1f, 1f, _two, gatherB: true);
        Check(transA, false, 2f, 0f, _one, gatherB: true);
    }

    private static void Check(bool transA, bool transB, float alpha, float beta, CpuBackend backend, bool gatherB)
    {
        var rng = new Random(transA ? 7 : 3);
        int maxM = Shapes.Max(s => s.M), maxN = Shapes.Max(s => s.N), maxK = Shapes.Max(s => s.K);
        int lda = (transA ? maxM : maxK) + 3, ldb = (transB ? maxK : maxN) + 5, ldc = maxN + 2;
        // A and C: one stacked array each, groups at offsets; B: one array per group (like experts' weights), or one
        // shared source whose rows the gather picks (like the layer input).
        var groups = new GemmGroup[Shapes.Length];
        float[] a = new float[Shapes.Sum(s => (transA ? s.K : s.M) * lda) + 1];
        float[] c0 = new float[Shapes.Sum(s => s.M * ldc) + 1];
        Fill(rng, a);
        Fill(rng, c0);
        float[] shared = new float[50 * ldb];
        Fill(rng, shared);
        var rowIndex = new List<int>();
        var gathered = new float[Shapes.Length][];
        int aOff = 0, cOff = 0;
        for (int g = 0; g < Shapes.Length; g++)
        {
            var (m, n, k) = Shapes[g];
            if (gatherB)
            {
                var rows = Enumerable.Range(0, k).Select(_ => rng.Next(50)).ToArray();
                gathered[g] = new float[Math.Max(1, k * ldb)];
                for (int p = 0; p < k; p++) shared.AsSpan(rows[p] * ldb, ldb).CopyTo(gathered[g].AsSpan(p * ldb));
                groups[g] = new GemmGroup(m, n, k, a, aOff, shared, 0, c0, cOff, BRowsOffset: rowIndex.Count);
                rowIndex.AddRange(rows);
            }
            else
            {
                gathered[g] = new float[(transB ? n : k) * ldb + 1];
                Fill(rng, gathered[g]);
                groups[g] = new GemmGroup(m, n, k, a, aOff, gathered[g], 1, c0, cOff);
            }
            aOff += (transA ? k : m) * lda;
            cOff += m * ldc;
        }

        float[] expected = (float[])c0.Clone(), actual = (float[])c0.Clone();
        for (int g = 0; g < groups.Length; g++)
        {
            var (m, n, k) = Shapes[g];
            if (m == 0 || n == 0) continue;
            int bOff = gatherB ? 0 : 1;
            ReferenceGemm.Multiply(transA, transB, m, n, k, alpha, a.AsSpan(groups[g].AOffset), lda, gathered[g].AsSpan(bOff), ldb,
                beta, expected.AsSpan(groups[g].COffset), ldc);
        }
        var withActual = groups.Select(g => g with { C = actual }).ToArray();
        backend.GroupedGemm(transA, transB, alpha, beta, lda, ldb, ldc, withActual, rowIndex.ToArray());
        for (int i = 0; i < actual.Length; i++)
        {
            double tol = 4e-6 * (maxK + 16);
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tol, $"index {i}: {actual[i]} vs {expected[i]} (transA {transA}, transB {transB}, gather {gatherB})");
        }
    }

    [Fact]
    public void OperandsOutOfBoundsAreRejectedBeforeAnyWork()
    {
        float[] a = new float[6], b = new float[6], c = new float[4];
        var ok = new GemmGroup(2, 2, 3, a, 0, b, 0, c, 0);
        _one.GroupedGemm(false, true, 1f, 0f, 3, 3, 2, [ok], []);
        Assert.Throws<ArgumentException>(() => _one.GroupedGemm(false, true, 1f, 0f, 3, 3, 2, [ok with { C = new float[3] }], []));
        Assert.Throws<ArgumentException>(() => _one.GroupedGemm(false, true, 1f, 0f, 3, 3, 2, [ok with { AOffset = 1 }], []));
        // Gathered rows: B holds 3 rows of 2 (ldb 2); row 3 is outside, and a transposed B cannot be gathered.
        var gather = new GemmGroup(2, 2, 3, a, 0, b, 0, c, 0, BRowsOffset: 0);
        _one.GroupedGemm(false, false, 1f, 0f, 3, 2, 2, [gather], [2, 0, 1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => _one.GroupedGemm(false, false, 1f, 0f, 3, 2, 2, [gather], [2, 3, 1]));
        Assert.Throws<ArgumentException>(() => _one.GroupedGemm(false, false, 1f, 0f, 3, 2, 2, [gather], [2, 0]));
        Assert.Throws<ArgumentException>(() => _one.GroupedGemm(false, true, 1f, 0f, 3, 3, 2, [gather], [2, 0, 1]));
    }

    private static void Fill(Random rng, float[] x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextSingle() * 2f - 1f;
    }
}
