using DeepSeekSharp.Data;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>
/// The sample sequences ESFT scores experts on (ESFT used 32 × 4096 tokens of the task's training data), from any
/// dataset form the fine-tuning data takes: fine-tuning types (chat_template, alpaca, completion, input_output, gsm8k)
/// give their first examples, of at most the sequence length, with only the trained tokens counted; pre-tokenised
/// <c>bin16</c>/<c>bin32</c> files give windows, sequence i being tokens [i·L, (i+1)·L), every token counted.
/// </summary>
public static class ScoringData
{
    private static bool IsTokenFile(DatasetSpec d) => d.Type is "bin16" or "bin32";

    /// <summary>
    /// The first <paramref name="samples"/> sequences of <c>cfg.Datasets</c> (in order, across datasets), with windows
    /// and the longest example of <c>sequence_len</c> tokens; the config's tokenizer, chat template and masking keys apply
    /// to fine-tuning types.
    /// </summary>
    public static List<ScoringSequence> FromConfig(TrainConfig cfg, int samples, int vocabSize, Action<string>? log = null, CancellationToken ct = default)
    {
        if (samples < 1) throw new DeepSeekSharpException($"samples: must be ≥ 1 (got {samples})");
        if (cfg.Datasets.Count == 0) throw new DeepSeekSharpException("datasets: no dataset to score experts on");
        var sequences = new List<ScoringSequence>();
        SftTokenizer? tokenizer = null;
        foreach (var spec in cfg.Datasets)
        {
            if (sequences.Count >= samples) break;
            if (IsTokenFile(spec))
            {
                sequences.AddRange(Windows(spec.Path, spec.Type == "bin16" ? 2 : 4, samples - sequences.Count, cfg.SequenceLen, vocabSize));
                continue;
            }
            if (spec.Type is null || !SftDatasets.Types.Contains(spec.Type))
                throw new DeepSeekSharpException($"{spec.Path}: experts are scored on fine-tuning data ({string.Join(", ", SftDatasets.Types)}) or token files (bin16, bin32); give the dataset's type");
            tokenizer ??= SftTokenizer.FromConfig(cfg);
            foreach (var e in SftDatasets.Load(cfg, tokenizer, log, ct, [spec]).Examples.Take(samples - sequences.Count))
            {
                CheckVocab(e.Example.InputIds, vocabSize, e.Source);
                sequences.Add(new ScoringSequence(e.Example.InputIds, [.. e.Example.Labels.Select(l => l != TokenizedExample.IgnoreIndex)]));
            }
        }
        return sequences;
    }

    /// <summary>Windows [i·L, (i+1)·L) of a token file, i &lt; <paramref name="count"/> (fewer when the file ends first).</summary>
    public static IEnumerable<ScoringSequence> Windows(string path, int bytesPerToken, int count, int length, int vocabSize)
    {
        using var file = TokenFile.Open(path, bytesPerToken);
        if (file.Count < length) throw new DeepSeekSharpException($"{path}: {file.Count} tokens, fewer than one sequence of {length}");
        var result = new List<ScoringSequence>();
        for (long i = 0; i < count && (i + 1) * length <= file.Count; i++)
        {
            var tokens = new int[length];
            file.Read(i * length, tokens);
            CheckVocab(tokens, vocabSize, path);
            result.Add(new ScoringSequence(tokens));
        }
        return result;
    }

    private static void CheckVocab(int[] tokens, int vocabSize, string source)
    {
        foreach (int id in tokens)
            if ((uint)id >= (uint)vocabSize) throw new DeepSeekSharpException($"{source}: token id {id} is outside the model's vocabulary [0, {vocabSize})");
    }
}
