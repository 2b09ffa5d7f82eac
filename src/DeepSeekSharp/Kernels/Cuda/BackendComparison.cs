using System.Diagnostics;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>One operation of <see cref="IBackend"/> run on two backends with the same random inputs.</summary>
/// <param name="Name">the operation and case</param>
/// <param name="Error">max |candidate − reference| / max(|reference|), over every output of the case</param>
/// <param name="Tolerance">the largest error that passes (0: bit-identical)</param>
/// <param name="Milliseconds">wall time of the candidate's call(s), staging included</param>
public sealed record ComparisonResult(string Name, double Error, double Tolerance, double Milliseconds, string? Failure = null)
{
    public bool Passed => Failure is null && Error <= Tolerance;
}

/// <summary>
/// Every operation of <see cref="IBackend"/>, forward and backward, on a candidate backend against a reference
/// backend (the CPU one, itself checked against PyTorch), on fresh random inputs with outputs poisoned before each
/// call. Quantisation codes and scales must be bit-identical; fp32 arithmetic agrees to a relative error of 1e-5
/// (1e-4 for the attention's longer sums); TF32/BF16 GEMMs to their input rounding. Used by the tests (on an emulated
/// GPU) and by <c>dss cuda check</c> (on a real one).
/// </summary>
public sealed class BackendComparison(IBackend candidate, IBackend reference, int seed = 1, bool large = false)
{
    private readonly Random _rng = new(seed);
    private readonly List<ComparisonResult> _results = [];

    /// <summary>The tolerance of fp32 GEMMs on the candidate (TF32 tensor cores round inputs to 10 mantissa bits).</summary>
    public double GemmTolerance { get; init; } = 1e-5;

    public IReadOnlyList<ComparisonResult> RunAll()
    {
        Gemms();
        Norms();
        Activations();
        Rotary();
        Attention();
        Quantisers();
        CrossEntropy();
        return _results;
    }

    private float[] Random(long n, float scale = 1f)
    {
        var x = new float[n];
        for (long i = 0; i < n; i++) x[i] = (float)(_rng.NextDouble() * 2 - 1) * scale;
        return x;
    }

    private static float[] Poisoned(long n)
    {
        var x = new float[n];
        Array.Fill(x, float.NaN);
        return x;
    }

    private void Case(string name, double tolerance, Func<(double Error, double Ms)> body)
    {
        try
        {
            var (error, ms) = body();
            _results.Add(new ComparisonResult(name, error, tolerance, ms));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _results.Add(new ComparisonResult(name, double.NaN, tolerance, 0, $"{e.GetType().Name}: {e.Message}"));
        }
    }

    private static double Timed(Action action)
    {
        var sw = Stopwatch.StartNew();
        action();
        return sw.Elapsed.TotalMilliseconds;
    }

    /// <summary>max |a − b| / max |b| (NaN anywhere in a counts as an infinite error: an output left unwritten).</summary>
    public static double RelativeError(ReadOnlySpan<float> candidate, ReadOnlySpan<float> reference)
    {
        if (candidate.Length != reference.Length) return double.PositiveInfinity;
        double worst = 0, scale = 1e-30;
        for (int i = 0; i < reference.Length; i++)
        {
            scale = Math.Max(scale, Math.Abs(reference[i]));
            if (float.IsNaN(candidate[i]) != float.IsNaN(reference[i])) return double.PositiveInfinity;
            if (!float.IsNaN(reference[i])) worst = Math.Max(worst, Math.Abs((double)candidate[i] - reference[i]));
        }
        return worst / scale;
    }

    private static double Mismatches<T>(ReadOnlySpan<T> candidate, ReadOnlySpan<T> reference) where T : IEquatable<T>
    {
        if (candidate.Length != reference.Length) return double.PositiveInfinity;
        int bad = 0;
        for (int i = 0; i < reference.Length; i++) if (!candidate[i].Equals(reference[i])) bad++;
        return bad;
    }

    private static double Max(params double[] errors) => errors.Max();

    private void Gemms()
    {
        int m = large ? 257 : 19, n = large ? 129 : 23, k = large ? 300 : 37;
        foreach (var (ta, tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
            var a = Random((long)(ta ? k : m) * lda);
            var b = Random((long)(tb ? n : k) * ldb);
            var c0 = Random((long)m * ldc);
            Case($"gemm {(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')} {m}x{n}x{k} alpha 0.5 beta 0.25, padded ld", GemmTolerance, () =>
            {
                float[] want = (float[])c0.Clone(), got = (float[])c0.Clone();
                reference.Gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 0.25f, want, ldc);
                double ms = Timed(() => candidate.Gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 0.25f, got, ldc));
                return (RelativeError(got, want), ms);
            });
        }
        Case("gemm k = 0 scales C by beta", 0, () =>
        {
            var c = Random(6 * 5);
            float[] want = (float[])c.Clone(), got = (float[])c.Clone();
            reference.Gemm(false, false, 6, 5, 0, 1f, [], 1, [], 5, 0.5f, want, 5);
            double ms = Timed(() => candidate.Gemm(false, false, 6, 5, 0, 1f, [], 1, [], 5, 0.5f, got, 5));
            return (RelativeError(got, want), ms);
        });
        Case("grouped gemm: 3 experts (one empty), gathered B rows", GemmTolerance, () =>
        {
            int hidden = 24, inter = 16;
            var x = Random(10L * hidden);
            int[] rows = [7, 1, 3, 3, 9, 0];
            var dy = Random(6L * inter);
            var start = new[] { Random(inter * hidden), Random(inter * hidden), Random(inter * hidden) };
            // dW_e += dy_eᵀ · x[rows_e]: expert 0 owns stacked rows 0..3, expert 1 none, expert 2 rows 3..6.
            float[][] Run(IBackend be, out double ms)
            {
                var outs = start.Select(o => (float[])o.Clone()).ToArray();
                GemmGroup[] groups =
                [
                    new(inter, hidden, 3, dy, 0, x, 0, outs[0], 0, BRowsOffset: 0),
                    new(inter, hidden, 0, dy, 0, x, 0, outs[1], 0, BRowsOffset: 3),
                    new(inter, hidden, 3, dy, 3 * inter, x, 0, outs[2], 0, BRowsOffset: 3),
                ];
                ms = Timed(() => be.GroupedGemm(true, false, 1f, 1f, inter, hidden, hidden, groups, rows));
                return outs;
            }
            var want = Run(reference, out _);
            var got = Run(candidate, out double ms);
            return (Max(RelativeError(got[0], want[0]), RelativeError(got[1], want[1]), RelativeError(got[2], want[2])), ms);
        });
        Case("grouped gemm: plain and transposed groups", GemmTolerance, () =>
        {
            var a1 = Random(5 * 8); var b1 = Random(6 * 8); var a2 = Random(4 * 8); var b2 = Random(6 * 8);
            float[] c1w = Random(5 * 6), c2w = Random(4 * 6);
            float[] c1g = (float[])c1w.Clone(), c2g = (float[])c2w.Clone();
            reference.GroupedGemm(false, true, 1f, 1f, 8, 8, 6, [new(5, 6, 8, a1, 0, b1, 0, c1w, 0), new(4, 6, 8, a2, 0, b2, 0, c2w, 0)], []);
            double ms = Timed(() => candidate.GroupedGemm(false, true, 1f, 1f, 8, 8, 6, [new(5, 6, 8, a1, 0, b1, 0, c1g, 0), new(4, 6, 8, a2, 0, b2, 0, c2g, 0)], []));
            return (Math.Max(RelativeError(c1g, c1w), RelativeError(c2g, c2w)), ms);
        });
        Case("packed B (head weight) then 2 products", GemmTolerance, () =>
        {
            int vocab = 40, hidden = 16, rows = 9;
            var w = Random(vocab * hidden);
            var h = Random(rows * hidden);
            float[] want = Poisoned(rows * vocab), got = Poisoned(rows * vocab);
            using (var pw = reference.PackGemmB(true, w, hidden, vocab, hidden)) reference.GemmPackedB(false, rows, 1f, h, hidden, pw, 0f, want, vocab);
            double ms = Timed(() =>
            {
                using var pc = candidate.PackGemmB(true, w, hidden, vocab, hidden);
                candidate.GemmPackedB(false, rows, 1f, h, hidden, pc, 0f, got, vocab);
            });
            return (RelativeError(got, want), ms);
        });
        foreach (var storage in new[] { WeightStorage.Bf16, WeightStorage.Fp8Block })
            Case($"compressed-weight gemm ({storage})", GemmTolerance, () =>
            {
                int rows = 130, cols = 140, m = 7;
                var w = CompressedWeight.Compress(Random((long)rows * cols), rows, cols, storage);
                var a = Random((long)m * cols);
                float[] want = Poisoned(m * rows), got = Poisoned(m * rows);
                reference.GemmCompressedWeight(m, a, w, want);
                double ms = Timed(() => candidate.GemmCompressedWeight(m, a, w, got));
                return (RelativeError(got, want), ms);
            });
    }

    private void Norms()
    {
        int rows = large ? 64 : 6, d = large ? 1024 : 40;
        var x = Random((long)rows * d); var w = Random(d); var dy = Random((long)rows * d);
        Case($"rmsnorm forward [{rows}, {d}]", 1e-5, () =>
        {
            float[] yw = Poisoned(x.Length), yg = Poisoned(x.Length), rw = Poisoned(rows), rg = Poisoned(rows);
            reference.RmsNormForward(x, w, 1e-6f, d, yw, rw);
            double ms = Timed(() => candidate.RmsNormForward(x, w, 1e-6f, d, yg, rg));
            return (Math.Max(RelativeError(yg, yw), RelativeError(rg, rw)), ms);
        });
        Case($"rmsnorm backward dx and dw (accumulating)", 1e-5, () =>
        {
            var inv = new float[rows];
            reference.RmsNormForward(x, w, 1e-6f, d, new float[x.Length], inv);
            var dx0 = Random(x.Length); var dw0 = Random(d);
            float[] dxw = (float[])dx0.Clone(), dxg = (float[])dx0.Clone(), dww = (float[])dw0.Clone(), dwg = (float[])dw0.Clone();
            reference.RmsNormBackward(x, w, inv, dy, d, dxw, dww);
            double ms = Timed(() => candidate.RmsNormBackward(x, w, inv, dy, d, dxg, dwg));
            return (Math.Max(RelativeError(dxg, dxw), RelativeError(dwg, dww)), ms);
        });
    }

    private void Activations()
    {
        long n = large ? 1 << 20 : 1000;
        var a = Random(n, 4); var b = Random(n); var dy = Random(n);
        Case($"silu_mul forward [{n}]", 1e-5, () =>
        {
            float[] want = Poisoned(n), got = Poisoned(n);
            reference.SiluMulForward(a, b, want);
            double ms = Timed(() => candidate.SiluMulForward(a, b, got));
            return (RelativeError(got, want), ms);
        });
        foreach (bool accumulate in new[] { true, false })
            Case($"silu_mul backward ({(accumulate ? "accumulate" : "store")})", 1e-5, () =>
            {
                var da0 = accumulate ? Random(n) : Poisoned(n); var db0 = accumulate ? Random(n) : Poisoned(n);
                float[] daw = (float[])da0.Clone(), dag = (float[])da0.Clone(), dbw = (float[])db0.Clone(), dbg = (float[])db0.Clone();
                reference.SiluMulBackward(a, b, dy, daw, dbw, accumulate);
                double ms = Timed(() => candidate.SiluMulBackward(a, b, dy, dag, dbg, accumulate));
                return (Math.Max(RelativeError(dag, daw), RelativeError(dbg, dbw)), ms);
            });
    }

    private void Rotary()
    {
        int rows = large ? 512 : 7, groups = 3, stride = 24, offset = 8, ropeDim = 16, maxPos = 64;
        var x = Random((long)rows * groups * stride);
        var positions = Enumerable.Range(0, rows).Select(_ => _rng.Next(maxPos)).ToArray();
        var cos = Random(maxPos * ropeDim / 2); var sin = Random(maxPos * ropeDim / 2);
        foreach (bool inverse in new[] { false, true })
            Case($"rope {(inverse ? "inverse" : "forward")} (bit-identical)", 0, () =>
            {
                float[] want = Poisoned(x.Length), got = Poisoned(x.Length);
                reference.Rope(x, want, rows, groups, stride, offset, ropeDim, positions, cos, sin, inverse);
                double ms = Timed(() => candidate.Rope(x, got, rows, groups, stride, offset, ropeDim, positions, cos, sin, inverse));
                return (Mismatches<float>(got, want), ms);
            });
    }

    private void Attention()
    {
        var s = large ? new MlaAttentionShape(2, 256, 8, 64, 32, 64, 0.1f) : new MlaAttentionShape(2, 11, 2, 8, 4, 6, 0.3f);
        long tokens = (long)s.Batch * s.SeqLen;
        var q = Random(tokens * s.Heads * s.QDim); var kvb = Random(tokens * s.Heads * s.KvbDim); var kpe = Random(tokens * s.RopeDim);
        var dO = Random(tokens * s.Heads * s.VDim);
        Case($"mla attention forward B{s.Batch} T{s.SeqLen} H{s.Heads}", 1e-4, () =>
        {
            float[] ow = Poisoned(tokens * s.Heads * s.VDim), og = Poisoned(ow.Length), lw = Poisoned(tokens * s.Heads), lg = Poisoned(lw.Length);
            reference.MlaAttentionForward(s, q, kvb, kpe, ow, lw);
            double ms = Timed(() => candidate.MlaAttentionForward(s, q, kvb, kpe, og, lg));
            return (Math.Max(RelativeError(og, ow), RelativeError(lg, lw)), ms);
        });
        Case($"mla attention backward (accumulating dq, dkv_b, dk_pe)", 1e-4, () =>
        {
            var lse = new float[tokens * s.Heads];
            reference.MlaAttentionForward(s, q, kvb, kpe, new float[tokens * s.Heads * s.VDim], lse);
            var dq0 = Random(q.Length); var dkvb0 = Random(kvb.Length); var dkpe0 = Random(kpe.Length);
            float[] dqw = (float[])dq0.Clone(), dqg = (float[])dq0.Clone(), dkw = (float[])dkvb0.Clone(), dkg = (float[])dkvb0.Clone();
            float[] dpw = (float[])dkpe0.Clone(), dpg = (float[])dkpe0.Clone();
            reference.MlaAttentionBackward(s, q, kvb, kpe, lse, dO, dqw, dkw, dpw);
            double ms = Timed(() => candidate.MlaAttentionBackward(s, q, kvb, kpe, lse, dO, dqg, dkg, dpg));
            return (Max(RelativeError(dqg, dqw), RelativeError(dkg, dkw), RelativeError(dpg, dpw)), ms);
        });
    }

    private void Quantisers()
    {
        // Shapes with partial tiles at both edges; small where the tiling makes many blocks (the emulator runs every
        // block's threads for real).
        foreach (var (tr, tc, rows, cols) in new[] { (1, 128, large ? 300 : 5, large ? 1000 : 260), (128, 128, large ? 300 : 131, large ? 1000 : 260),
                     (128, 1, large ? 300 : 131, large ? 1000 : 9) })
        {
            var x = Random((long)rows * cols, 3);
            x[1] = 0; x[cols + 2] = 1e-9f; x[2 * cols] = 447.9f; // a zero, a subnormal code and a saturating one
            Case($"quantize E4M3 {tr}x{tc} tiles [{rows}, {cols}] (codes, scales, values bit-identical)", 0, () =>
            {
                int scaleCount = ((rows + tr - 1) / tr) * ((cols + tc - 1) / tc);
                byte[] cw = new byte[x.Length], cg = new byte[x.Length];
                float[] sw = Poisoned(scaleCount), sg = Poisoned(scaleCount), vw = Poisoned(x.Length), vg = Poisoned(x.Length);
                reference.QuantizeE4M3(x, rows, cols, tr, tc, cw, sw, vw);
                double ms = Timed(() => candidate.QuantizeE4M3(x, rows, cols, tr, tc, cg, sg, vg));
                float[] back = Poisoned(x.Length);
                candidate.DequantizeE4M3(cg, rows, cols, tr, tc, sg, back);
                return (Mismatches<byte>(cg, cw) + Mismatches<float>(sg, sw) + Mismatches<float>(vg, vw) + Mismatches<float>(back, vw), ms);
            });
        }
        {
            int rows = large ? 300 : 4, cols = large ? 1000 : 260;
            var x = Random((long)rows * cols, 3);
            x[1] = 0; x[cols + 2] = 1e-9f; x[2 * cols] = 70000f; // a zero, a subnormal, a saturating value
            Case("quantize E4M3 rejects NaN like the reference", 0, () =>
            {
                var bad = (float[])x.Clone();
                bad[3 * cols + 4] = float.NaN;
                string Message(IBackend be)
                {
                    try { be.QuantizeE4M3(bad, rows, cols, 1, 128, new byte[bad.Length], new float[rows * ((cols + 127) / 128)], []); return "no error"; }
                    catch (DeepSeekSharpException e) { return e.Message; }
                }
                string want = Message(reference), got = Message(candidate);
                if (want != got) throw new InvalidOperationException($"reference says '{want}', candidate '{got}'");
                return (0, 0);
            });
            Case($"E5M6 cache quantize/dequantize [{rows}, {cols}] (bit-identical)", 0, () =>
            {
                int scaleCount = rows * ((cols + 127) / 128);
                ushort[] cw = new ushort[x.Length], cg = new ushort[x.Length];
                float[] sw = Poisoned(scaleCount), sg = Poisoned(scaleCount), vw = Poisoned(x.Length), vg = Poisoned(x.Length);
                reference.QuantizeE5M6(x, rows, cols, cw, sw);
                double ms = Timed(() => candidate.QuantizeE5M6(x, rows, cols, cg, sg));
                reference.DequantizeE5M6(cw, rows, cols, sw, vw);
                candidate.DequantizeE5M6(cg, rows, cols, sg, vg);
                return (Mismatches<ushort>(cg, cw) + Mismatches<float>(sg, sw) + Mismatches<float>(vg, vw), ms);
            });
        }
    }

    private void CrossEntropy()
    {
        int rows = large ? 256 : 9, v = large ? 32000 : 300;
        var logits = Random((long)rows * v, 5);
        var targets = Enumerable.Range(0, rows).Select(r => r % 4 == 3 ? -1 : _rng.Next(v)).ToArray();
        Case($"cross-entropy forward [{rows}, {v}] (loss, lse)", 1e-5, () =>
        {
            float[] lw = Poisoned(rows), lg = Poisoned(rows);
            double want = reference.CrossEntropyForward(logits, targets, v, lw);
            double got = 0;
            double ms = Timed(() => got = candidate.CrossEntropyForward(logits, targets, v, lg));
            return (Math.Max(Math.Abs(got - want) / Math.Abs(want), RelativeError(lg, lw)), ms);
        });
        Case("cross-entropy forward+backward (dlogits stored, ignored rows zero)", 1e-5, () =>
        {
            float[] lw = Poisoned(rows), lg = Poisoned(rows), dw = Poisoned(logits.Length), dg = Poisoned(logits.Length);
            double want = reference.CrossEntropyForwardBackward(logits, targets, v, lw, 0.125f, dw);
            double got = 0;
            double ms = Timed(() => got = candidate.CrossEntropyForwardBackward(logits, targets, v, lg, 0.125f, dg));
            return (Max(Math.Abs(got - want) / Math.Abs(want), RelativeError(lg, lw), RelativeError(dg, dw)), ms);
        });
        Case("cross-entropy backward (accumulating)", 1e-5, () =>
        {
            var lse = new float[rows];
            reference.CrossEntropyForward(logits, targets, v, lse);
            var d0 = Random(logits.Length);
            float[] dw = (float[])d0.Clone(), dg = (float[])d0.Clone();
            reference.CrossEntropyBackward(logits, targets, v, lse, 0.5f, dw);
            double ms = Timed(() => candidate.CrossEntropyBackward(logits, targets, v, lse, 0.5f, dg));
            return (RelativeError(dg, dw), ms);
        });
    }
}
