using DeepSeekSharp.Optim;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Optim;

public class AdamWTests
{
    /// <summary>Round to nearest even BF16, written from the definition (value grid), not from bit tricks.</summary>
    private static double Bf16(double x)
    {
        if (x == 0) return x;
        int e = (int)Math.Floor(Math.Log2(Math.Abs(x)));
        double ulp = Math.Pow(2, e - 7);
        double q = x / ulp, r = Math.Round(q, MidpointRounding.ToEven);
        return r * ulp;
    }

    [Fact]
    public void BulkBf16ConversionsMatchTheDefinition()
    {
        var rng = new Random(4);
        var x = new float[1000];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 30)));
        x[0] = BitConverter.Int32BitsToSingle(0x3F808000); // exact tie, rounds down to even
        x[1] = BitConverter.Int32BitsToSingle(0x3F818000); // exact tie, rounds up to even
        var h = new ushort[x.Length];
        var back = new float[x.Length];
        NumericFormats.FloatToBf16(x, h);
        NumericFormats.Bf16ToFloat(h, back);
        var rounded = new float[x.Length];
        NumericFormats.RoundToBf16(x, rounded);
        for (int i = 0; i < x.Length; i++)
        {
            Assert.Equal(NumericFormats.FloatToBf16(x[i]), h[i]);
            Assert.Equal(Bf16(x[i]), back[i]);
            Assert.Equal(Bf16(x[i]), rounded[i]);
        }
    }

    [Fact]
    public void Bf16MomentsFollowTheRoundedRecurrence()
    {
        const int n = 5000; // more than one 4,096-element chunk
        var rng = new Random(8);
        var p = new Parameter([n], true) { RequiresGrad = true, WeightDecay = true };
        var w = new double[n];
        for (int i = 0; i < n; i++) w[i] = p.Span[i] = (float)(rng.NextDouble() - 0.5);
        var opt = new AdamW([("w", p)]) { Moments = MomentPrecision.Bf16 };
        double b1 = 0.9, b2 = 0.95, eps = 1e-8, lr = 1e-2, wd = 0.1;
        var m = new double[n];
        var v = new double[n];
        for (int step = 1; step <= 4; step++)
        {
            p.Grad = new float[n];
            for (int i = 0; i < n; i++) p.Grad[i] = (float)((rng.NextDouble() - 0.5) * 1e-2);
            opt.Update((float)lr);
            for (int i = 0; i < n; i++)
            {
                double g = p.Grad[i];
                double mi = b1 * m[i] + (1 - b1) * g, vi = b2 * v[i] + (1 - b2) * g * g;
                w[i] *= 1 - lr * wd;
                w[i] -= lr * (mi / (1 - Math.Pow(b1, step))) / (Math.Sqrt(vi / (1 - Math.Pow(b2, step))) + eps);
                // The state keeps BF16 moments; the update itself used them at full precision.
                m[i] = Bf16(mi);
                v[i] = Bf16(vi);
            }
        }
        var (_, sm, sv) = opt.State().Single();
        for (int i = 0; i < n; i++)
        {
            Assert.True(Math.Abs(sm[i] - m[i]) <= Math.Abs(m[i]) * 1e-2 + 1e-12, $"m[{i}] {sm[i]} vs {m[i]}");
            Assert.True(Math.Abs(sv[i] - v[i]) <= Math.Abs(v[i]) * 1e-2 + 1e-15, $"v[{i}] {sv[i]} vs {v[i]}");
            // A one-ulp BF16 difference in an earlier step moves a later update by ~0.4% of lr.
            Assert.True(Math.Abs(p.Span[i] - w[i]) <= 2e-4, $"w[{i}] {p.Span[i]} vs {w[i]}");
        }
        // Half the state of fp32 moments.
        Assert.Equal(4L * n, opt.StateBytes);
        // Rounded to BF16: the low 16 bits of every stored moment are zero.
        Assert.All(sm, x => Assert.Equal(0, BitConverter.SingleToInt32Bits(x) & 0xFFFF));
    }

    [Theory]
    [InlineData(MomentPrecision.Fp32)]
    [InlineData(MomentPrecision.Bf16)]
    public void ChunksSplitOverTheWorkersGiveTheSameBitsAsInline(MomentPrecision moments)
    {
        var rng = new Random(12);
        Parameter Make() => new([100_000], true) { RequiresGrad = true };
        var (a, b, c) = (Make(), Make(), new Parameter([300], true) { RequiresGrad = true, WeightDecay = false });
        var (a2, b2, c2) = (Make(), Make(), new Parameter([300], true) { RequiresGrad = true, WeightDecay = false });
        foreach (var (x, y) in new[] { (a, a2), (b, b2), (c, c2) })
            for (int i = 0; i < x.Length; i++) x.Span[i] = y.Span[i] = (float)(rng.NextDouble() - 0.5);
        var parallel = new AdamW([("a", a), ("b", b), ("c", c)]) { Moments = moments, Pool = new DeepSeekSharp.Kernels.Cpu.WorkerPool(2) };
        var inline = new AdamW([("a", a2), ("b", b2), ("c", c2)]) { Moments = moments, Pool = null };
        for (int step = 0; step < 3; step++)
        {
            foreach (var (x, y) in new[] { (a, a2), (b, b2), (c, c2) })
            {
                x.Grad = new float[x.Length];
                for (int i = 0; i < x.Length; i++) x.Grad[i] = (float)(rng.NextDouble() - 0.5) * 1e-2f;
                y.Grad = (float[])x.Grad.Clone();
            }
            parallel.Update(3e-3f);
            inline.Update(3e-3f);
        }
        Assert.Equal(a2.Span.ToArray(), a.Span.ToArray());
        Assert.Equal(b2.Span.ToArray(), b.Span.ToArray());
        Assert.Equal(c2.Span.ToArray(), c.Span.ToArray());
        Assert.Equal(inline.State().SelectMany(s => s.M), parallel.State().SelectMany(s => s.M));
    }
}
