using System.Runtime.InteropServices;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Autograd;

namespace DeepSeekSharp.Tests.Distillation;

/// <summary>
/// The fused distillation loss against the float64 PyTorch reference (tools/reference/kd_reference.py writes
/// Fixtures/kd-op/cases.safetensors: dense and top-k teachers, τ = 1 and 2, both tail treatments, loss and dh, dW),
/// against finite differences, and offline (top-k with k = V) against online.
/// </summary>
public class DistillationLossTests
{
    private static readonly Random Rng = new(77);

    internal static int[] ReadInt32(SafeTensorsReader r, string name) => MemoryMarshal.Cast<byte, int>(r.GetBytes(r.Get(name))).ToArray();

    private static Tensor Param(SafeTensorsReader r, string name)
    {
        var e = r.Get(name);
        var t = Tensor.FromArray(r.ReadFloat32(name), e.Shape.Select(d => (int)d).ToArray());
        t.RequiresGrad = true;
        return t;
    }

    public static TheoryData<string, float, float, float, string, string> ReferenceCases => new()
    {
        { "dense-t1", 1f, 0.5f, 0.5f, "dense", "" },
        { "dense-t2", 2f, 0.7f, 0.3f, "dense", "" },
        { "top6-renormalize-t1", 1f, 1f, 0f, "top6", "renormalize" },
        { "top6-renormalize-t2", 2f, 0.5f, 0.5f, "top6", "renormalize" },
        { "top6-bucket-t1", 1f, 0.5f, 0.5f, "top6", "bucket" },
        { "top6-bucket-t2", 2f, 0.8f, 0.25f, "top6", "bucket" },
        { "topV-renormalize-t2", 2f, 0.7f, 0.3f, "topV", "renormalize" },
        { "topV-bucket-t2", 2f, 0.7f, 0.3f, "topV", "bucket" },
    };

    [Theory]
    [MemberData(nameof(ReferenceCases))]
    public void LossAndGradientsMatchPyTorch(string name, float tau, float klWeight, float ceWeight, string teacherKind, string tail) =>
        CheckReferenceCase(name, tau, klWeight, ceWeight, teacherKind, tail, 0f);

    public static TheoryData<string, float, float, float, string, string, float> BetaCases => new()
    {
        { "dense-b1-t1", 1f, 0.6f, 0.4f, "dense", "", 1f },
        { "dense-b0.5-t2", 2f, 0.7f, 0.3f, "dense", "", 0.5f },
        { "dense-b0.1-t1", 1f, 1f, 0f, "dense", "", 0.1f },
        { "top6-bucket-b1-t2", 2f, 0.8f, 0.2f, "top6", "bucket", 1f },
        { "top6-bucket-b0.5-t1", 1f, 0.5f, 0.5f, "top6", "bucket", 0.5f },
        { "topV-bucket-b0.5-t2", 2f, 0.7f, 0.3f, "topV", "bucket", 0.5f },
    };

    /// <summary>kd_beta: reverse KL (β = 1) and the generalised JSD against the same reference.</summary>
    [Theory]
    [MemberData(nameof(BetaCases))]
    public void KdBetaLossAndGradientsMatchPyTorch(string name, float tau, float klWeight, float ceWeight, string teacherKind, string tail, float beta) =>
        CheckReferenceCase(name, tau, klWeight, ceWeight, teacherKind, tail, beta);

    private static void CheckReferenceCase(string name, float tau, float klWeight, float ceWeight, string teacherKind, string tail, float beta)
    {
        using var r = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("kd-op"), "cases.safetensors"));
        Tensor h = Param(r, "h"), w = Param(r, "W");
        int[] targets = ReadInt32(r, "targets");
        int v = w.Shape[0];
        TeacherTargets teacher = teacherKind == "dense"
            ? DenseTeacher.FromHidden(Param(r, "th"), Param(r, "tW"))
            : new TopKTeacher(ReadInt32(r, teacherKind + ".ids"), r.ReadFloat32(teacherKind + ".logprobs"), teacherKind == "top6" ? 6 : v);
        var loss = new DistillationLoss(klWeight, ceWeight, tau, tail == "bucket" ? TopKTail.Bucket : TopKTail.Renormalize, beta);
        var result = KnowledgeDistillationOps.Loss(h, w, targets, teacher, loss);
        Backprop.Backward(result.Total);

        Assert.Equal(r.ReadFloat32(name + ".loss")[0], result.Total.Data[0], 1e-5f);
        Assert.Equal(r.ReadFloat32(name + ".kl")[0], result.Kl, 1e-5f);
        Assert.Equal(r.ReadFloat32(name + ".ce")[0], result.Ce, 1e-5f);
        AssertClose(r.ReadFloat32(name + ".dh"), h.Grad!, name + ".dh");
        AssertClose(r.ReadFloat32(name + ".dW"), w.Grad!, name + ".dW");
    }

    internal static void AssertClose(float[] want, float[] got, string what, double rel = 1e-5)
    {
        double max = want.Max(Math.Abs);
        Assert.True(max > 1e-3, $"{what}: the reference gradient is (near) zero: nothing is compared");
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= rel * max, $"{what}[{i}]: want {want[i]}, got {got[i]}");
    }

    [Fact]
    public void TopKOfTeacherLogitsAreTheReferencesIdsAndLogProbs()
    {
        using var r = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("kd-op"), "cases.safetensors"));
        Tensor th = Param(r, "th"), tw = Param(r, "tW");
        var logits = Functional.Linear(th, tw).Span.ToArray();
        var top = TopKTeacher.FromLogits(logits, tw.Shape[0], 6);
        Assert.Equal(ReadInt32(r, "top6.ids"), top.Ids);
        var want = r.ReadFloat32("top6.logprobs");
        for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], top.LogProbs[i], 1e-5f);
    }

    public static TheoryData<string, float> FiniteDifferenceCases => new()
    {
        { "dense", 2f }, { "renormalize", 2f }, { "bucket", 2f }, { "bucket", 1f }, { "renormalize", 0.5f },
    };

    [Theory]
    [MemberData(nameof(FiniteDifferenceCases))]
    public void BackwardMatchesFiniteDifferences(string kind, float tau)
    {
        const int rows = 7, hidden = 5, v = 11, k = 4;
        var h = GradCheck.Random(Rng, 1, rows, hidden);
        var w = GradCheck.Random(Rng, 1, v, hidden);
        var teacherLogits = GradCheck.Random(Rng, 2, rows, v).Span.ToArray();
        int[] targets = Enumerable.Range(0, rows).Select(i => i == 3 ? -1 : (i * 4) % v).ToArray();
        TeacherTargets teacher = kind == "dense" ? DenseTeacher.FromLogits(teacherLogits, v) : TopKTeacher.FromLogits(teacherLogits, v, k);
        var loss = new DistillationLoss(0.6f, 0.4f, tau, kind == "bucket" ? TopKTail.Bucket : TopKTail.Renormalize);
        GradCheck.Check(() => Functional.WeightedSum([KnowledgeDistillationOps.Loss(h, w, targets, teacher, loss).Total], [1.3f]), [h, w], eps: 3e-3f);
    }

    public static TheoryData<string, float, float> BetaFiniteDifferenceCases => new()
    {
        { "dense", 2f, 0.5f }, { "dense", 1f, 1f }, { "dense", 1f, 0.1f }, { "bucket", 2f, 0.5f }, { "bucket", 1f, 1f }, { "bucket", 0.5f, 0.3f },
    };

    [Theory]
    [MemberData(nameof(BetaFiniteDifferenceCases))]
    public void KdBetaBackwardMatchesFiniteDifferences(string kind, float tau, float beta)
    {
        const int rows = 7, hidden = 5, v = 11, k = 4;
        var h = GradCheck.Random(Rng, 1, rows, hidden);
        var w = GradCheck.Random(Rng, 1, v, hidden);
        var teacherLogits = GradCheck.Random(Rng, 2, rows, v).Span.ToArray();
        int[] targets = Enumerable.Range(0, rows).Select(i => i == 3 ? -1 : (i * 4) % v).ToArray();
        TeacherTargets teacher = kind == "dense" ? DenseTeacher.FromLogits(teacherLogits, v) : TopKTeacher.FromLogits(teacherLogits, v, k);
        var loss = new DistillationLoss(0.6f, 0.4f, tau, kind == "bucket" ? TopKTail.Bucket : TopKTail.Renormalize, beta);
        GradCheck.Check(() => Functional.WeightedSum([KnowledgeDistillationOps.Loss(h, w, targets, teacher, loss).Total], [1.3f]), [h, w], eps: 3e-3f);
    }

    [Fact]
    public void KdBetaWithARenormalisedTopKTeacherIsRefused()
    {
        var h = GradCheck.Random(Rng, 1, 2, 3);
        var w = GradCheck.Random(Rng, 1, 5, 3);
        var teacher = TopKTeacher.FromLogits(GradCheck.Random(Rng, 1, 2, 5).Span, 5, 2);
        var e = Assert.Throws<DeepSeekSharpException>(() => KnowledgeDistillationOps.Loss(h, w, [1, 2], teacher, new DistillationLoss(1f, 0f, 1f, TopKTail.Renormalize, 0.5f)));
        Assert.StartsWith("kd_beta 0.5 needs a full-vocabulary teacher or kd_tail: bucket", e.Message);
        Assert.Contains("kd_beta must be in [0, 1]", Assert.Throws<DeepSeekSharpException>(() => new DistillationLoss(1f, 0f, 1f, TopKTail.Bucket, 1.5f).Validate("x")).Message);
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(2f)]
    public void OfflineWithKEqualToTheVocabularyIsOnline(float tau)
    {
        // 150 rows over a 40,000 vocabulary: blocks of 64, 64 and 22 rows.
        const int rows = 150, hidden = 8, v = 40_000;
        var h = GradCheck.Random(Rng, 1, rows, hidden);
        var w = GradCheck.Random(Rng, 0.5f, v, hidden);
        var teacherLogits = GradCheck.Random(Rng, 3, rows, v).Span.ToArray();
        int[] targets = Enumerable.Range(0, rows).Select(i => i % 7 == 3 ? -1 : Rng.Next(v)).ToArray();
        foreach (var tail in new[] { TopKTail.Renormalize, TopKTail.Bucket })
        {
            var loss = new DistillationLoss(0.7f, 0.3f, tau, tail);
            var online = KnowledgeDistillationOps.Loss(h, w, targets, DenseTeacher.FromLogits(teacherLogits, v), loss);
            Backprop.Backward(online.Total);
            var (gh, gw) = (h.Grad!.AsSpan(0, (int)h.Length).ToArray(), w.Grad!.AsSpan(0, (int)w.Length).ToArray());
            (h.Grad, w.Grad) = (null, null);
            var offline = KnowledgeDistillationOps.Loss(h, w, targets, TopKTeacher.FromLogits(teacherLogits, v, v), loss);
            Backprop.Backward(offline.Total);
            Assert.Equal(online.Total.Data[0], offline.Total.Data[0], 1e-6f * Math.Abs(online.Total.Data[0]));
            Assert.True(online.Kl > 0.1f, "the teacher and the student should differ");
            AssertClose(gh, h.Grad!.AsSpan(0, (int)h.Length).ToArray(), $"dh ({tail})", 1e-5);
            AssertClose(gw, w.Grad!.AsSpan(0, (int)w.Length).ToArray(), $"dW ({tail})", 1e-5);
            (h.Grad, w.Grad) = (null, null);
        }
    }

    [Fact]
    public void WithNoKlWeightTheLossIsTheFusedCrossEntropyOverSeveralBlocks()
    {
        const int rows = 150, hidden = 8, v = 40_000;
        var h = GradCheck.Random(Rng, 1, rows, hidden);
        var w = GradCheck.Random(Rng, 0.5f, v, hidden);
        int[] targets = Enumerable.Range(0, rows).Select(i => i % 5 == 1 ? -1 : Rng.Next(v)).ToArray();
        var teacher = DenseTeacher.FromLogits(new float[rows * v], v);
        var kd = KnowledgeDistillationOps.Loss(h, w, targets, teacher, new DistillationLoss(0f, 1f, 2f));
        var ce = Functional.LinearCrossEntropy(h, w, targets);
        Assert.Equal(ce.Data[0], kd.Total.Data[0], 1e-5f);
        Assert.Equal(ce.Data[0], kd.Ce, 1e-5f);
    }

    [Fact]
    public void ATeacherWithAnotherVocabularyIsRefused()
    {
        var h = GradCheck.Random(Rng, 1, 2, 3);
        var w = GradCheck.Random(Rng, 1, 5, 3);
        var ex = Assert.Throws<DeepSeekSharpException>(() =>
            KnowledgeDistillationOps.Loss(h, w, [1, 2], DenseTeacher.FromLogits(new float[12], 6), DistillationLoss.Mix(0.5f, 1f)));
        Assert.Contains("shared tokenizer", ex.Message);
    }
}
