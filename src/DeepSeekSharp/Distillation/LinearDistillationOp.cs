using DeepSeekSharp.Autograd;
using DeepSeekSharp.Autograd.Ops;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Distillation;

/// <summary>The distillation loss of one call and its two parts (each a mean over the same trained rows) for logging.</summary>
public sealed record DistillationResult(Tensor Total, float Kl, float Ce);

/// <summary>
/// KlWeight·τ²·KL(p_T^τ ‖ p_S^τ) + CeWeight·CE(y, z_s) with student logits z_s = h·Wᵀ, never materialising [rows, V]:
/// like <see cref="LinearCrossEntropyOp"/>, rows go through in blocks of about 8 MB of logits, and since a block's
/// d(loss)/d(logits) is known as soon as its row statistics are, the forward turns it into the block's share of dh
/// [rows, H] and dW [V, H] right away (the backward only scales them by the incoming gradient). A dense teacher's block
/// of logits is formed the same way from its hidden states and head, so the teacher's [rows, V] never exists either.
/// </summary>
internal sealed class LinearDistillationOp : GradNode
{
    private readonly float[]? _dh;
    private readonly float[]? _dw;

    private LinearDistillationOp(Tensor h, Tensor w, float[]? dh, float[]? dw) : base(false, h, w) => (_dh, _dw) = (dh, dw);

    public static DistillationResult Forward(Tensor h, Tensor w, int[] targets, TeacherTargets teacher, DistillationLoss loss, long? divisor = null)
    {
        int hidden = w.Shape[1], v = w.Shape[0];
        OpBase.CheckLastDim(h, hidden, "distillation input");
        int rows = OpBase.Rows(h);
        if (teacher.Rows != rows) throw new ArgumentException($"distillation: {teacher.Rows} teacher rows for {rows} student rows");
        if (teacher is DenseTeacher d && d.Vocab != v) throw new DeepSeekSharpException($"teacher vocabulary {d.Vocab} != student vocabulary {v}: distillation needs a shared tokenizer");
        if (teacher is TopKTeacher t) CheckIds(t, v);
        if (loss.Beta > 0 && teacher is TopKTeacher && loss.Tail != TopKTail.Bucket)
            throw new DeepSeekSharpException($"kd_beta {loss.Beta} needs a full-vocabulary teacher or kd_tail: bucket (with renormalize the student's top-k side is not a distribution)");
        int count = OpBase.Divisor(OpBase.CountTargets(targets, rows, v), divisor);
        bool record = count > 0 && OpBase.WillRecord(h, w);
        float[]? dh = record && h.RequiresGrad ? StoragePool.RentZeroed(rows * hidden) : null;
        float[]? dw = record && w.RequiresGrad ? StoragePool.RentZeroed(v * hidden) : null;
        var (kl, ce) = count == 0 ? (0, 0) : Blocks(h, w, targets, teacher, loss, count, record, dh, dw);
        float klMean = count == 0 ? 0 : (float)(kl / count), ceMean = count == 0 ? 0 : (float)(ce / count);
        float total = count == 0 ? 0 : (float)((loss.KlWeight * (double)loss.Temperature * loss.Temperature * kl + loss.CeWeight * ce) / count);
        var y = Tensor.FromArray([total], 1);
        var output = record ? OpBase.Record(y, () => new LinearDistillationOp(h, w, dh, dw), h, w) : y;
        return new DistillationResult(output, klMean, ceMean);
    }

    private static void CheckIds(TopKTeacher t, int v)
    {
        foreach (int id in t.Ids)
            if (id >= v) throw new DeepSeekSharpException($"teacher token id {id} is outside the student's vocabulary [0, {v})");
    }

    /// <summary>One sweep over row blocks: the summed KL and CE, and (with <paramref name="grads"/>) dh and dW.</summary>
    private static (double Kl, double Ce) Blocks(Tensor h, Tensor w, int[] targets, TeacherTargets teacher, DistillationLoss loss,
        int count, bool grads, float[]? dh, float[]? dw)
    {
        int hidden = w.Shape[1], v = w.Shape[0], rows = OpBase.Rows(h);
        var be = h.Backend;
        int block = Math.Min(rows, LinearCrossEntropyOp.BlockRows(v));
        var dense = teacher as DenseTeacher;
        var sparse = teacher as TopKTeacher;
        float[] logits = StoragePool.Rent(block * v), dlogits = grads ? StoragePool.Rent(block * v) : [];
        float[] teacherLogits = dense is not null ? StoragePool.Rent(block * v) : [];
        var rowKl = new double[block];
        var rowCe = new double[block];
        int workers = Math.Max(1, Math.Min(Environment.ProcessorCount, block));
        var scratch = new DistillationRows.Scratch[workers];
        bool jsd = loss.Beta > 0;
        for (int i = 0; i < workers; i++) scratch[i] = new DistillationRows.Scratch(v, sparse?.K ?? 0, jsd);
        float invT = 1f / loss.Temperature;
        float ceScale = loss.CeWeight / count, klScale = loss.KlWeight * loss.Temperature / count;
        double klSum = 0, ceSum = 0;
        try
        {
            for (int r0 = 0; r0 < rows; r0 += block)
            {
                int n = Math.Min(block, rows - r0);
                var hBlock = h.Span.Slice(r0 * hidden, n * hidden);
                be.Gemm(false, true, n, v, hidden, 1f, hBlock, hidden, w.Span, hidden, 0f, logits.AsSpan(0, n * v), v);
                dense?.FillBlock(r0, n, teacherLogits.AsSpan(0, n * v));
                be.RunConcurrently(workers, worker =>
                {
                    var s = scratch[worker];
                    for (int i = worker; i < n; i += workers)
                    {
                        int r = r0 + i, y = targets[r];
                        if (y < 0)
                        {
                            (rowKl[i], rowCe[i]) = (0, 0);
                            if (grads) dlogits.AsSpan(i * v, v).Clear();
                            continue;
                        }
                        var z = logits.AsSpan(i * v, v);
                        var dz = grads ? dlogits.AsSpan(i * v, v) : [];
                        // The forward KL's gradient starts with klScale·q here; the divergences of kd_beta add their own whole.
                        var st = DistillationRows.StudentSide(z, y, invT, s, ceScale, jsd ? 0f : klScale, dz, out rowCe[i]);
                        rowKl[i] = (dense, jsd) switch
                        {
                            (not null, false) => DistillationRows.DenseTeacher(z, teacherLogits.AsSpan(i * v, v), st, s, klScale, dz),
                            (not null, true) => DistillationRows.DenseTeacherJsd(z, teacherLogits.AsSpan(i * v, v), st, s, loss.Beta, klScale, dz),
                            (null, false) => DistillationRows.SparseTeacher(z, sparse!.Ids.AsSpan(r * sparse.K, sparse.K),
                                sparse.LogProbs.AsSpan(r * sparse.K, sparse.K), loss.Tail, st, s, klScale, dz),
                            (null, true) => DistillationRows.BucketTeacherJsd(z, sparse!.Ids.AsSpan(r * sparse.K, sparse.K),
                                sparse.LogProbs.AsSpan(r * sparse.K, sparse.K), st, s, loss.Beta, klScale, dz),
                        };
                    }
                });
                for (int i = 0; i < n; i++) (klSum, ceSum) = (klSum + rowKl[i], ceSum + rowCe[i]);
                if (!grads) continue;
                var dBlock = dlogits.AsSpan(0, n * v);
                if (dh is not null) be.Gemm(false, false, n, hidden, v, 1f, dBlock, v, w.Span, hidden, 1f, dh.AsSpan(r0 * hidden, n * hidden), hidden);
                if (dw is not null) be.Gemm(true, false, v, hidden, n, 1f, dBlock, v, hBlock, hidden, 1f, dw, hidden);
            }
        }
        finally
        {
            StoragePool.Return(logits);
            if (grads) StoragePool.Return(dlogits);
            if (dense is not null) StoragePool.Return(teacherLogits);
        }
        return (klSum, ceSum);
    }

    public override bool ReadsOutput => false;

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor h = Inputs[0], w = Inputs[1];
        AddPrecomputedGradient(h, _dh, dy[0]);
        AddPrecomputedGradient(w, _dw, dy[0]);
    }
}
