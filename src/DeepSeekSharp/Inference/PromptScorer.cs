using DeepSeekSharp.Distillation;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Inference;

/// <summary>
/// The model's log-probabilities of a prompt's own tokens and its most likely ids at every position (what vLLM's
/// <c>prompt_logprobs</c> and an echoed completion's <c>logprobs</c> report). The computation is the distillation
/// teacher's: one forward of the prompt as a training sequence, logits formed a block of rows at a time over the whole
/// vocabulary (<see cref="DenseTeacher.Score"/>), so a served teacher, an in-process teacher and a
/// <c>dss distill dump</c> of the same model give the same floats.
/// </summary>
public sealed class PromptScorer
{
    private readonly DeepSeekModel _model;
    private readonly Lazy<Tensor> _head;
    // The training forward is not written for concurrent calls on one model: prompts are scored one at a time.
    private readonly Lock _gate = new();

    public PromptScorer(DeepSeekModel model)
    {
        _model = model;
        _head = new Lazy<Tensor>(() => KnowledgeDistillation.HeadWeight(model.LmHead));
    }

    public DeepSeekModel Model => _model;

    /// <summary>Row r (of prompt.Length − 1) describes prompt[r + 1] given prompt[..(r + 1)].</summary>
    /// <param name="prompt">[T] ids, T ≥ 1</param>
    /// <param name="top">most likely ids to list per row (0: none)</param>
    public TeacherScores Score(int[] prompt, int top)
    {
        int vocab = _model.Config.VocabSize;
        if (prompt.Length == 0) throw new DeepSeekSharpException("the prompt is empty");
        if (prompt.Length > _model.Config.MaxPositionEmbeddings)
            throw new DeepSeekSharpException($"the prompt ({prompt.Length} tokens) exceeds the model's context of {_model.Config.MaxPositionEmbeddings}");
        if (top > vocab) throw new DeepSeekSharpException($"{top} log-probabilities per position requested; the vocabulary has {vocab}");
        foreach (int id in prompt)
            if ((uint)id >= (uint)vocab) throw new DeepSeekSharpException($"token id {id} is outside the vocabulary [0, {vocab})");
        // Row p of the forward predicts token p + 1; the last row predicts past the prompt and is not asked for.
        var chosen = new int[prompt.Length];
        prompt.AsSpan(1).CopyTo(chosen);
        chosen[^1] = -1;
        TeacherScores all;
        lock (_gate)
        {
            var dense = KnowledgeDistillation.RunTeacher(_model, prompt, SequenceBatch.Training(1, prompt.Length), _head.Value);
            all = dense.Score(top, chosen);
        }
        int rows = prompt.Length - 1;
        var topRows = all.Top is { } t ? new TopKTeacher(t.Ids[..(rows * top)], t.LogProbs[..(rows * top)], top) : null;
        return new TeacherScores(topRows, all.ChosenLogprobs[..rows], all.ChosenRanks[..rows]);
    }
}
