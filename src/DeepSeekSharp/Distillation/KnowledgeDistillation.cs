using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Distillation;

/// <summary>The distillation loss of a student model against a teacher (docs/distillation.md).</summary>
public static class KnowledgeDistillation
{
    /// <summary>
    /// The loss of the student's output head over <paramref name="hidden"/> [rows, H] (blockwise, no [rows, V] logits).
    /// A BF16-computing head is rounded as in <see cref="LanguageModelLoss.HeadLoss"/>.
    /// </summary>
    public static DistillationResult HeadLoss(Linear head, Tensor hidden, int[] targets, TeacherTargets teacher, DistillationLoss loss, long? divisor = null)
    {
        if (head.Adapter is not null || head.InferenceWeight is not null || head.Fp8Compute)
            throw new DeepSeekSharpException("distillation needs a plain fp32 or BF16 student output head (not adapted, compressed or FP8)");
        var weight = head.Bf16Compute ? Functional.RoundBf16(head.Weight) : head.Weight;
        return LinearDistillationOp.Forward(hidden, weight, targets, teacher, loss, divisor);
    }

    /// <summary>
    /// The distillation loss of <paramref name="student"/> on one batch (main head only, no MTP): the student's final hidden
    /// states through <see cref="HeadLoss"/> against <paramref name="teacher"/>'s rows, which align with the batch's.
    /// </summary>
    /// <param name="labels">[B·T] labels aligned with the inputs (−100 where no loss); null: the tokens themselves</param>
    public static DistillationResult Compute(DeepSeekModel student, int[] tokens, SequenceBatch batch, TeacherTargets teacher,
        DistillationLoss loss, int[]? labels = null, long? divisor = null)
    {
        var (hidden, _) = student.ForwardHidden(tokens, batch, 0);
        return HeadLoss(student.LmHead, hidden, DeepSeekModel.Targets(labels ?? tokens, batch, 0), teacher, loss, divisor);
    }

    /// <summary>Refuses a teacher that cannot teach <paramref name="student"/>: another vocabulary size (no shared tokenizer).</summary>
    public static void CheckPair(DeepSeekModel student, DeepSeekModel teacher, string teacherSource)
    {
        if (teacher.Config.VocabSize != student.Config.VocabSize)
            throw new DeepSeekSharpException($"{teacherSource}: the teacher's vocabulary ({teacher.Config.VocabSize}) is not the student's ({student.Config.VocabSize}); distillation needs a shared tokenizer");
    }

    /// <summary>
    /// The teacher's final hidden states of <paramref name="tokens"/> (no gradients) as dense targets: its logits are formed
    /// one block at a time inside the loss.
    /// </summary>
    public static DenseTeacher RunTeacher(DeepSeekModel teacher, int[] tokens, SequenceBatch batch) =>
        RunTeacher(teacher, tokens, batch, HeadWeight(teacher.LmHead));

    /// <param name="headWeight">[V, H_t] the teacher's head as <see cref="HeadWeight"/> gives it (kept by a caller that runs the teacher often)</param>
    public static DenseTeacher RunTeacher(DeepSeekModel teacher, int[] tokens, SequenceBatch batch, Tensor headWeight)
    {
        using var _ = GradMode.NoGrad();
        var (hidden, _) = teacher.ForwardHidden(tokens, batch, 0);
        return DenseTeacher.FromHidden(hidden, headWeight);
    }

    /// <summary>
    /// The weight [V, H_t] a teacher's logits are formed with: the head's own (BF16-rounded for a BF16 head); a stored
    /// (BF16/FP8) or adapted head widened to fp32 with its adapter folded in, in a new tensor.
    /// </summary>
    public static Tensor HeadWeight(Linear head)
    {
        if (head.Adapter is not null || head.InferenceWeight is not null)
            return Tensor.FromArray(head.EffectiveWeight(), head.OutFeatures, head.InFeatures);
        return head.Bf16Compute ? Functional.RoundBf16(head.Weight) : head.Weight;
    }
}

/// <summary>The fused loss on a hidden-state tensor and a head weight (tests, tools): see <see cref="LinearDistillationOp"/>.</summary>
public static class KnowledgeDistillationOps
{
    /// <param name="hidden">[rows, H]</param>
    /// <param name="headWeight">[V, H]</param>
    /// <param name="targets">[rows] next-token ids, −1 where a row is not trained</param>
    public static DistillationResult Loss(Tensor hidden, Tensor headWeight, int[] targets, TeacherTargets teacher, DistillationLoss loss, long? divisor = null) =>
        LinearDistillationOp.Forward(hidden, headWeight, targets, teacher, loss, divisor);
}
