using DeepSeekSharp.Distillation;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Cli.Commands;

/// <summary>The distillation loss of <c>dss grad --teacher</c>: the teacher runs without gradients, the student's loss is the KD loss.</summary>
internal static class DistillGrad
{
    public static Tensor Loss(DeepSeekModel student, string teacherDir, int[] ids, SequenceBatch batch, float mtpWeight, DistillationLoss loss, int? topK)
    {
        if (mtpWeight > 0) throw new DeepSeekSharpException("--mtp-weight: distillation covers the main head only (give --mtp-weight 0 with --teacher)");
        var teacher = ModelCheckpoint.Load(teacherDir);
        KnowledgeDistillation.CheckPair(student, teacher, teacherDir);
        var dense = KnowledgeDistillation.RunTeacher(teacher, ids, batch);
        TeacherTargets targets = dense;
        if (topK is { } k)
        {
            if (k < 1 || k > student.Config.VocabSize) throw new DeepSeekSharpException($"--kd-top-k must be in [1, {student.Config.VocabSize}] (got {k})");
            targets = dense.TopK(k);
        }
        var result = KnowledgeDistillation.Compute(student, ids, batch, targets, loss);
        Console.Error.WriteLine($"kd: KL {result.Kl:F6} (τ = {loss.Temperature}), CE {result.Ce:F6}, loss {result.Total.Data[0]:F6}");
        return result.Total;
    }
}
