using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>
/// The tiled MLA attention kernel (transposed accumulations, deferred normalisation) against a direct double-precision
/// evaluation of softmax(scale·q·kᵀ + causal mask)·v and its gradients, at real head sizes (bench-small's dn 32, dr 16, dv 32 and bench-medium's 64, 32, 64) and a
/// length that spans several 64-row tiles with a partial last one.
/// </summary>
public class MlaAttentionKernelTests
{
    [Theory]
    [InlineData(1, 32, 16, 32)]
    [InlineData(2, 32, 16, 32)]
    [InlineData(2, 64, 32, 64)] // bench-medium's head: dq = 96 spans a full and a half micro-kernel strip
    public void ForwardAndBackwardMatchADirectEvaluation(int threads, int nopeDim, int ropeDim, int vDim)
    {
        var s = new MlaAttentionShape(2, 150, 3, nopeDim, ropeDim, vDim, 0.17f);
        int rows = s.Batch * s.SeqLen, t = s.SeqLen;
        var rng = new Random(11);
        float[] Random(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        float[] q = Random(rows * s.Heads * s.QDim), kvb = Random(rows * s.Heads * s.KvbDim), kpe = Random(rows * s.RopeDim);
        float[] dO = Random(rows * s.Heads * s.VDim);
        float[] o = new float[dO.Length], lse = new float[s.Batch * s.Heads * t];
        // The gradients accumulate into what the buffers hold.
        float[] dq = Random(q.Length), dkvb = Random(kvb.Length), dkpe = Random(kpe.Length);
        double[] edq = dq.Select(v => (double)v).ToArray(), edkvb = dkvb.Select(v => (double)v).ToArray(), edkpe = dkpe.Select(v => (double)v).ToArray();
        using var pool = new WorkerPool(threads);
        MlaAttentionKernels.Forward(s, q, kvb, kpe, o, lse, pool);
        MlaAttentionKernels.Backward(s, q, kvb, kpe, lse, dO, dq, dkvb, dkpe, pool);

        var eo = new double[o.Length];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.Heads; h++)
            {
                double Key(int j, int c) => c < s.NopeDim ? kvb[((b * t + j) * s.Heads + h) * s.KvbDim + c] : kpe[(b * t + j) * s.RopeDim + c - s.NopeDim];
                double Val(int j, int c) => kvb[((b * t + j) * s.Heads + h) * s.KvbDim + s.NopeDim + c];
                for (int i = 0; i < t; i++)
                {
                    int qi = ((b * t + i) * s.Heads + h) * s.QDim, oi = ((b * t + i) * s.Heads + h) * s.VDim;
                    var p = new double[i + 1];
                    double max = double.NegativeInfinity, sum = 0;
                    for (int j = 0; j <= i; j++)
                    {
                        double dot = 0;
                        for (int c = 0; c < s.QDim; c++) dot += q[qi + c] * Key(j, c);
                        p[j] = s.Scale * dot;
                        max = Math.Max(max, p[j]);
                    }
                    for (int j = 0; j <= i; j++) { p[j] = Math.Exp(p[j] - max); sum += p[j]; }
                    for (int j = 0; j <= i; j++) p[j] /= sum;
                    Assert.True(Math.Abs(max + Math.Log(sum) - lse[(b * s.Heads + h) * t + i]) < 1e-5, $"lse {b},{h},{i}");
                    var dp = new double[i + 1];
                    double dsum = 0;
                    for (int j = 0; j <= i; j++)
                        for (int c = 0; c < s.VDim; c++)
                        {
                            eo[oi + c] += p[j] * Val(j, c);
                            dp[j] += dO[oi + c] * Val(j, c);
                            edkvb[((b * t + j) * s.Heads + h) * s.KvbDim + s.NopeDim + c] += p[j] * dO[oi + c];
                        }
                    for (int j = 0; j <= i; j++) dsum += p[j] * dp[j];
                    for (int j = 0; j <= i; j++)
                    {
                        double ds = s.Scale * p[j] * (dp[j] - dsum);
                        for (int c = 0; c < s.QDim; c++)
                        {
                            edq[qi + c] += ds * Key(j, c);
                            if (c < s.NopeDim) edkvb[((b * t + j) * s.Heads + h) * s.KvbDim + c] += ds * q[qi + c];
                            else edkpe[(b * t + j) * s.RopeDim + c - s.NopeDim] += ds * q[qi + c];
                        }
                    }
                }
            }
        AssertClose(eo, o, "o");
        AssertClose(edq, dq, "dq");
        AssertClose(edkvb, dkvb, "dkvb");
        AssertClose(edkpe, dkpe, "dkpe");
    }

    private static void AssertClose(double[] expected, float[] actual, string what)
    {
        double scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * scale + 1e-6, $"{what}[{i}]: {expected[i]} vs {actual[i]}");
    }
}
