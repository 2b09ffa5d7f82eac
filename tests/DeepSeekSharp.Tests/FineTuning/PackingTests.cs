using DeepSeekSharp.Autograd;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// Isolated packing (sample_packing): examples packed into one sequence give the loss and gradients of the same
/// examples run one by one, MTP included; the attention kernel's documents are computed exactly like sequences of
/// their own.
/// </summary>
public class PackingTests
{
    // Three examples of v3-tiny's vocabulary (128 ids) with prompt positions masked (-100), as SFT data gives them.
    private static readonly TokenizedExample[] Examples =
    [
        new([5, 17, 33, 2, 90, 14, 1], [-100, -100, -100, 2, 90, 14, 1]),
        new([7, 7, 61, 100, 3, 8, 22, 45, 1], [-100, -100, -100, -100, 3, 8, 22, 45, 1]),
        new([12, 99, 4, 1], [-100, 99, 4, 1]),
    ];

    private static DeepSeekModel Model() => ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));

    private static Dictionary<string, float[]> Grads(DeepSeekModel model) =>
        model.NamedParameters().Where(p => p.Parameter.Grad is not null).ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray());

    /// <summary>The examples packed into one row of 24 (20 example tokens, then 4 of padding): loss and gradients.</summary>
    private static (double Loss, Dictionary<string, float[]> Grads) Packed(bool isolate)
    {
        var model = Model();
        const int t = 24;
        var tokens = new int[t];
        var labels = Enumerable.Repeat(TokenizedExample.IgnoreIndex, t).ToArray();
        int at = 0;
        foreach (var e in Examples)
        {
            e.InputIds.CopyTo(tokens, at);
            e.Labels.CopyTo(labels, at);
            at += e.InputIds.Length;
        }
        var geometry = isolate ? SequenceBatch.Packed(t, [[.. Examples.Select(e => e.InputIds.Length), t - at]]) : SequenceBatch.Training(1, t);
        var divisors = LanguageModelLoss.CountTargets(labels, geometry, 1);
        model.ZeroGrad();
        var loss = LanguageModelLoss.Compute(model, tokens, geometry, 0.3f, 1, labels, divisors);
        Backprop.Backward(loss.Total, freeActivations: true);
        return (loss.Total.Data[0], Grads(model));
    }

    /// <summary>Each example alone (batch 1, its own length), the loss divided by the targets of all of them together.</summary>
    private static (double Loss, Dictionary<string, float[]> Grads) OneByOne(bool reversed = false)
    {
        var model = Model();
        var divisors = new long[2];
        foreach (var e in Examples)
        {
            var c = LanguageModelLoss.CountTargets(e.Labels, SequenceBatch.Training(1, e.InputIds.Length), 1);
            divisors[0] += c[0];
            divisors[1] += c[1];
        }
        model.ZeroGrad();
        double total = 0;
        foreach (var e in reversed ? Examples.Reverse() : Examples)
        {
            var loss = LanguageModelLoss.Compute(model, e.InputIds, SequenceBatch.Training(1, e.InputIds.Length), 0.3f, 1, e.Labels, divisors);
            Backprop.Backward(loss.Total, freeActivations: true);
            total += loss.Total.Data[0];
        }
        return (total, Grads(model));
    }

    [Fact]
    public void APackedBatchHasTheLossAndGradientsOfItsExamplesRunOneByOne()
    {
        var packed = Packed(isolate: true);
        var alone = OneByOne();
        // Not bitwise: every token's own computation is identical (the attention kernel and the row-wise ops give the
        // same bits), but a weight's gradient sums over rows, once over the packed rows and once per example then added,
        // and the loss sums the rows' losses in a different order. The same examples one by one in the reverse order
        // differ from each other by exactly such reorderings: that is the noise floor the packed batch must stay within.
        var reversed = OneByOne(reversed: true);
        Assert.Equal(alone.Loss, packed.Loss, 6);
        Assert.Equal(alone.Grads.Keys.Order(), packed.Grads.Keys.Order());
        double worst = 0, floor = 0;
        foreach (var (name, g) in alone.Grads)
        {
            var p = packed.Grads[name];
            var r = reversed.Grads[name];
            float scale = Math.Max(g.Max(MathF.Abs), 1e-3f);
            for (int i = 0; i < g.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(g[i] - p[i]) / scale);
                floor = Math.Max(floor, Math.Abs(g[i] - r[i]) / scale);
            }
        }
        // Measured on 2 threads: 1.7e-6 of the tensor's largest gradient packed vs one by one, 2.5e-7 between the two
        // orders (the GEMMs over 24 rows and over 4–9 rows also block their sums differently); a leak across examples
        // moves gradients by more than 1e-3 of that scale (WithoutIsolationThePackedExamplesSeeEachOther).
        Assert.True(worst <= 3e-6, $"packed vs one by one: {worst:E2} of the tensor scale (reordering floor {floor:E2})");
        Assert.True(floor > 0 && floor <= 3e-6, $"reordering floor {floor:E2}");
        // The MTP head and its block got gradients too (the MTP targets are inside each example).
        Assert.Contains(alone.Grads, kv => kv.Key.StartsWith("model.layers.3.", StringComparison.Ordinal) && kv.Value.Any(v => v != 0));
    }

    [Fact]
    public void WithoutIsolationThePackedExamplesSeeEachOther()
    {
        // The same packed row read as one document (pre-training's packing): the later examples attend to the earlier
        // ones and their positions do not restart, so the loss moves well beyond rounding.
        var isolated = Packed(isolate: true);
        var mixed = Packed(isolate: false);
        Assert.True(Math.Abs(isolated.Loss - mixed.Loss) > 1e-4, $"{isolated.Loss} vs {mixed.Loss}");
        double moved = isolated.Grads.Where(kv => mixed.Grads.ContainsKey(kv.Key)).Max(kv => kv.Value.Zip(mixed.Grads[kv.Key], (a, b) => Math.Abs(a - b)).Max() / Math.Max(kv.Value.Max(MathF.Abs), 1e-3f));
        Assert.True(moved > 1e-3, $"gradients moved by {moved:E2} of their scale");
    }

    [Fact]
    public void TargetsAndShiftedTokensStopAtTheEndOfTheirDocument()
    {
        var geometry = SequenceBatch.Packed(6, [[3, 3], [6]]);
        int[] ids = [10, 11, 12, 20, 21, 22, 30, 31, 32, 33, 34, 35];
        int[] labels = [-100, 11, 12, -100, 21, 22, 30, 31, 32, 33, 34, 35];
        Assert.Equal([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4, 5], geometry.Positions);
        Assert.Equal([11, 12, -1, 21, 22, -1, 31, 32, 33, 34, 35, -1], DeepSeekModel.Targets(labels, geometry, 0));
        Assert.Equal([12, -1, -1, 22, -1, -1, 32, 33, 34, 35, -1, -1], DeepSeekModel.Targets(labels, geometry, 1));
        Assert.Equal([11, 12, 0, 21, 22, 0, 31, 32, 33, 34, 35, 0], DeepSeekModel.ShiftTokens(ids, geometry, 1));
        // Depth 0: 2 + 1 (row 4's label is -100) + 5; depth 1: 1 + 0 + 4; depth 2: only the long document reaches 3 ahead.
        int[] masked = [-100, 11, 12, -100, 21, -100, 30, 31, 32, 33, 34, 35];
        Assert.Equal([8L, 5L, 3L], LanguageModelLoss.CountTargets(masked, geometry, 2));
    }

    [Theory]
    [InlineData(new[] { 0, 5, 5, 12 }, "ascend")]
    [InlineData(new[] { 0, 9, 12 }, "spans the sequence boundary")]
    [InlineData(new[] { 0, 12 }, "spans the sequence boundary")]
    [InlineData(new[] { 0, 6, 11 }, "from 0 to 12")]
    public void DocumentOffsetsThatDoNotDescribeTheRowsAreRefused(int[] offsets, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => new SequenceBatch(2, 6, new int[12], offsets));
        Assert.Contains(message, e.Message);
    }

    /// <summary>Random attention inputs for B sequences of T rows.</summary>
    private static (float[] Q, float[] Kvb, float[] Kpe, float[] DO) AttentionInputs(MlaAttentionShape s, int seed)
    {
        var rng = new Random(seed);
        float[] Fill(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int rows = s.Batch * s.SeqLen;
        return (Fill(rows * s.Heads * s.QDim), Fill(rows * s.Heads * s.KvbDim), Fill(rows * s.RopeDim), Fill(rows * s.Heads * s.VDim));
    }

    [Fact]
    public void TheAttentionKernelComputesEachDocumentExactlyAsASequenceOfItsOwn()
    {
        // Two sequences of 150 rows: documents of 70 + 80 (the 80 crossing a 64-row tile boundary mid-document) and
        // 1 + 149 + nothing else; each document alone must give the same bits.
        var s = new MlaAttentionShape(2, 150, 3, 8, 4, 6, 0.3f, [0, 70, 150, 151, 300]);
        var (q, kvb, kpe, dO) = AttentionInputs(s, 1);
        var cpu = new CpuBackend(threads: 2);
        var o = new float[300 * 3 * 6];
        var lse = new float[2 * 3 * 150];
        cpu.MlaAttentionForward(s, q, kvb, kpe, o, lse);
        float[] dq = new float[q.Length], dkvb = new float[kvb.Length], dkpe = new float[kpe.Length];
        cpu.MlaAttentionBackward(s, q, kvb, kpe, lse, dO, dq, dkvb, dkpe);

        // The per-document path (what a backend without varlen kernels runs), over the CPU backend's plain kernels.
        var o2 = new float[o.Length];
        var lse2 = new float[lse.Length];
        DocumentAttention.Forward(cpu, s, q, kvb, kpe, o2, lse2);
        float[] dq2 = new float[q.Length], dkvb2 = new float[kvb.Length], dkpe2 = new float[kpe.Length];
        DocumentAttention.Backward(cpu, s, q, kvb, kpe, lse2, dO, dq2, dkvb2, dkpe2);
        Assert.Equal(o, o2);
        Assert.Equal(lse, lse2);
        Assert.Equal(dq, dq2);
        Assert.Equal(dkvb, dkvb2);
        Assert.Equal(dkpe, dkpe2);

        // And not what one causal attention over the whole sequence gives.
        var whole = s with { Documents = null };
        var o3 = new float[o.Length];
        cpu.MlaAttentionForward(whole, q, kvb, kpe, o3, new float[lse.Length]);
        Assert.NotEqual(o, o3);
        Assert.Equal(o.AsSpan(0, 70 * 3 * 6).ToArray(), o3.AsSpan(0, 70 * 3 * 6).ToArray()); // the first document is a prefix
    }

    [Fact]
    public void TheDocumentAttentionIsCausalSoftmaxWithinEachDocument()
    {
        // An independent scalar attention, document by document, against the kernel (fp32 rounding apart).
        var s = new MlaAttentionShape(1, 20, 2, 4, 2, 3, 0.5f, [0, 7, 20]);
        var (q, kvb, kpe, _) = AttentionInputs(s, 2);
        var o = new float[20 * 2 * 3];
        new CpuBackend(threads: 1).MlaAttentionForward(s, q, kvb, kpe, o, new float[2 * 20]);
        foreach (var (start, end) in new[] { (0, 7), (7, 20) })
            for (int i = start; i < end; i++)
                for (int h = 0; h < 2; h++)
                {
                    var scores = new double[i - start + 1];
                    for (int j = start; j <= i; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < 4; d++) dot += q[(i * 2 + h) * 6 + d] * kvb[(j * 2 + h) * 7 + d];
                        for (int d = 0; d < 2; d++) dot += q[(i * 2 + h) * 6 + 4 + d] * kpe[j * 2 + d];
                        scores[j - start] = dot * 0.5;
                    }
                    double max = scores.Max(), sum = scores.Sum(x => Math.Exp(x - max));
                    for (int d = 0; d < 3; d++)
                    {
                        double v = 0;
                        for (int j = start; j <= i; j++) v += Math.Exp(scores[j - start] - max) / sum * kvb[(j * 2 + h) * 7 + 4 + d];
                        Assert.Equal(v, o[(i * 2 + h) * 3 + d], 5);
                    }
                }
    }
}
