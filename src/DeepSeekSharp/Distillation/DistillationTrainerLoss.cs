using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// The trainer's loss under <c>distillation:</c>: the main head's term is the distillation loss towards an online teacher
/// (run without gradients on each micro-batch), a served teacher (each document of the micro-batch sent to it, its top-k
/// used as a dump's) or an offline dump (each document of the micro-batch found in it by its tokens); the MTP terms stay cross-entropy (training.md, MTP). Every term is divided as <see cref="LanguageModelLoss"/>
/// divides it, so micro-batches add up to the global batch's mean.
/// </summary>
public sealed class DistillationTrainerLoss : IDisposable
{
    private readonly DistillationConfig _cfg;
    private readonly DeepSeekModel? _teacher;
    private readonly TeacherDump? _dump;
    private readonly RemoteTeacher? _remote;

    private DistillationTrainerLoss(DistillationConfig cfg, DeepSeekModel? teacher, TeacherDump? dump, RemoteTeacher? remote) =>
        (_cfg, _teacher, _dump, _remote) = (cfg, teacher, dump, remote);

    /// <summary>The KL part of the last micro-batch's main term (a mean over its trained rows), for the log.</summary>
    public float LastKl { get; private set; }

    /// <summary>Null without <c>distillation:</c>; otherwise loads the teacher or opens the dump and checks it fits <paramref name="student"/>.</summary>
    public static DistillationTrainerLoss? Create(TrainConfig cfg, DeepSeekModel student, Action<string> log)
    {
        if (cfg.Distillation is not { } d) return null;
        var loss = d.Loss;
        if (d.KdTopK > student.Config.VocabSize)
            throw new DeepSeekSharpException($"distillation.kd_top_k {d.KdTopK} exceeds the vocabulary ({student.Config.VocabSize})");
        if (d.Teacher is { } dir)
        {
            var teacher = ModelCheckpoint.Load(dir);
            KnowledgeDistillation.CheckPair(student, teacher, dir);
            log($"distillation: online from {dir} (kd_alpha {loss.KlWeight}, kd_ce_alpha {loss.CeWeight}, kd_temperature {loss.Temperature}"
                + (d.KdTopK is { } k ? $", top-{k}, {d.KdTail.ToString().ToLowerInvariant()})" : ", full vocabulary)"));
            return new DistillationTrainerLoss(d, teacher, null, null);
        }
        if (d.TeacherUrl is { } url)
        {
            var remote = new RemoteTeacher(url, d.KdTopK!.Value, student.Config.VocabSize, TimeSpan.FromSeconds(d.KdOnlineTimeout));
            try
            {
                // One small request before any training: an unreachable or incompatible teacher fails the run here, once.
                remote.Fetch([[0, 1]]);
            }
            catch
            {
                remote.Dispose();
                throw;
            }
            log($"distillation: online from {url} (top-{remote.K}, {d.KdTail.ToString().ToLowerInvariant()}; kd_alpha {loss.KlWeight}, kd_ce_alpha {loss.CeWeight}, kd_temperature {loss.Temperature})");
            return new DistillationTrainerLoss(d, null, null, remote);
        }
        var dump = TeacherDump.Open(d.Logits!);
        log($"distillation: offline from {d.Logits} ({dump.Count:N0} sequences of top-{dump.K}, {d.KdTail.ToString().ToLowerInvariant()}; kd_alpha {loss.KlWeight}, kd_ce_alpha {loss.CeWeight}, kd_temperature {loss.Temperature})");
        return new DistillationTrainerLoss(d, null, dump, null);
    }

    /// <summary>The loss of one micro-batch (the same contract as <see cref="LanguageModelLoss.Compute"/>).</summary>
    public LossResult Compute(DeepSeekModel student, TrainingBatch mb, float mtpWeight, int mtpDepth, long[]? divisors)
    {
        if (mtpWeight <= 0) mtpDepth = 0;
        var teacher = Targets(mb);
        var (hidden, mtpHidden) = student.ForwardHidden(mb.Tokens, mb.Geometry, mtpDepth);
        var main = KnowledgeDistillation.HeadLoss(student.LmHead, hidden, DeepSeekModel.Targets(mb.Labels, mb.Geometry, 0), teacher, _cfg.Loss, divisors?[0]);
        LastKl = main.Kl;
        if (mtpDepth == 0) return new LossResult(main.Total, main.Total.Data[0], []);
        var terms = new Tensors.Tensor[mtpDepth + 1];
        var weights = new float[mtpDepth + 1];
        var parts = new float[mtpDepth];
        (terms[0], weights[0]) = (main.Total, 1f);
        for (int k = 1; k <= mtpDepth; k++)
        {
            terms[k] = LanguageModelLoss.HeadLoss(student.LmHead, mtpHidden[k - 1], DeepSeekModel.Targets(mb.Labels, mb.Geometry, k), divisors?[k]);
            weights[k] = mtpWeight / mtpDepth;
            parts[k - 1] = terms[k].Data[0];
        }
        return new LossResult(Functional.WeightedSum(terms, weights), main.Total.Data[0], parts);
    }

    private TeacherTargets Targets(TrainingBatch mb)
    {
        if (_teacher is not null)
        {
            var dense = KnowledgeDistillation.RunTeacher(_teacher, mb.Tokens, mb.Geometry);
            return _cfg.KdTopK is { } k ? dense.TopK(k) : dense;
        }
        if (_remote is not null) return Gather(mb, _remote.K, docs => _remote.Fetch(docs), $"distillation.teacher_url {_remote.Url}");
        var dump = _dump!;
        return Gather(mb, dump.K, docs => docs.Select(tokens => dump.Find(tokens)
            ?? throw new DeepSeekSharpException($"{dump.Directory}: a training document of {tokens.Length} tokens is not in the dump (was it written from these datasets, tokenizer and sequence_len?)")).ToArray(),
            dump.Directory);
    }

    /// <summary>
    /// [B·T, K] teacher rows of a micro-batch: the documents with trained rows are looked up together (a dump, or one request
    /// to a served teacher) and each one's rows placed at its offset.
    /// </summary>
    private static TopKTeacher Gather(TrainingBatch mb, int k, Func<IReadOnlyList<int[]>, KdSequence[]> lookup, string source)
    {
        int rows = mb.Tokens.Length;
        var ids = new int[rows * k];
        Array.Fill(ids, -1);
        var lp = new float[rows * k];
        var targets = DeepSeekModel.Targets(mb.Labels, mb.Geometry, 0);
        var covered = new bool[rows];
        var offsets = mb.Geometry.DocumentOffsets;
        var starts = new List<int>();
        var documents = new List<int[]>();
        for (int d = 0; d + 1 < offsets.Length; d++)
        {
            int start = offsets[d], length = offsets[d + 1] - start;
            bool trained = false;
            for (int r = start; r < start + length; r++) trained |= targets[r] >= 0;
            if (!trained) continue;
            starts.Add(start);
            documents.Add(mb.Tokens.AsSpan(start, length).ToArray());
        }
        var found = documents.Count == 0 ? [] : lookup(documents);
        for (int d = 0; d < found.Length; d++)
        {
            var seq = found[d];
            for (int i = 0; i < seq.Positions.Length; i++)
            {
                int row = starts[d] + seq.Positions[i];
                seq.Ids.AsSpan(i * k, k).CopyTo(ids.AsSpan(row * k, k));
                seq.LogProbs.AsSpan(i * k, k).CopyTo(lp.AsSpan(row * k, k));
                covered[row] = true;
            }
        }
        for (int r = 0; r < rows; r++)
            if (targets[r] >= 0 && !covered[r])
                throw new DeepSeekSharpException($"{source}: a trained position has no teacher row (was the dump written from these datasets?)");
        return new TopKTeacher(ids, lp, k);
    }

    public void Dispose()
    {
        _dump?.Dispose();
        _remote?.Dispose();
    }
}
