using System.Diagnostics;
using System.Text.Json;
using DeepSeekSharp.Data;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Inference;
using ChatTemplate = DeepSeekSharp.FineTuning.ChatTemplate;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Evaluation;

/// <summary>One GSM8K problem.</summary>
/// <param name="Question">the problem text (the user turn)</param>
/// <param name="Answer">the reference solution, ending with <c>#### N</c></param>
/// <param name="Reference">N, the reference's final answer, normalised (<see cref="Gsm8kAnswer"/>)</param>
/// <param name="Source">file:line</param>
public sealed record Gsm8kItem(string Question, string Answer, string Reference, string Source)
{
    /// <summary>The reference answer as a decimal.</summary>
    public decimal ReferenceValue => Gsm8kAnswer.Value(Reference) ?? throw new DeepSeekSharpException($"{Source}: the reference answer '{Reference}' is not a number");
}

/// <summary>A scored generation, kept as an example of a right or wrong answer.</summary>
/// <param name="Predicted">the answer extracted from <paramref name="Generation"/>, or null when it has none</param>
public sealed record Gsm8kSample(string Source, string Question, string Reference, string? Predicted, bool Correct, string Generation);

/// <summary>What a GSM8K evaluation found.</summary>
/// <param name="Examples">problems evaluated</param>
/// <param name="Correct">problems whose extracted answer equals the reference</param>
/// <param name="NoAnswer">generations in which no answer was found</param>
/// <param name="Right">the first right answers, up to the number of samples asked for</param>
/// <param name="Wrong">the first wrong answers, likewise</param>
/// <param name="GeneratedTokens">tokens generated in all (stop tokens not counted)</param>
/// <param name="HitTokenLimit">generations cut by the token limit instead of ending with EOS</param>
/// <param name="Elapsed">wall time of the generation</param>
public sealed record Gsm8kResult(int Examples, int Correct, int NoAnswer, IReadOnlyList<Gsm8kSample> Right, IReadOnlyList<Gsm8kSample> Wrong,
    long GeneratedTokens, int HitTokenLimit, TimeSpan Elapsed)
{
    /// <summary>Exact-match accuracy, Correct / Examples, in [0, 1].</summary>
    public double Accuracy => Examples == 0 ? 0 : (double)Correct / Examples;
}

/// <summary>How a GSM8K evaluation generates.</summary>
public sealed record Gsm8kOptions
{
    /// <summary>Tokens generated per problem at most (default 256).</summary>
    public int MaxNewTokens { get; init; } = 256;

    /// <summary>Problems decoded together, one forward per step for all of them (default 16).</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Right and wrong answers kept of each kind (default 3).</summary>
    public int Samples { get; init; } = 3;
}

/// <summary>
/// GSM8K exact-match accuracy: each question is rendered as the user turn of the chat template with its generation
/// prompt (the text a <c>gsm8k</c> fine-tuning example has before the answer), the model continues it greedily with the
/// latent-cache decoder until EOS or <see cref="Gsm8kOptions.MaxNewTokens"/>, and the answer extracted from the
/// continuation (<see cref="Gsm8kAnswer"/>) is compared with the reference's <c>#### N</c>.
/// </summary>
public static class Gsm8kEvaluator
{
    /// <summary>The problems of a GSM8K JSON-lines file (<c>question</c>, <c>answer</c> ending in <c>#### N</c>), the first <paramref name="limit"/> of them if given.</summary>
    public static IReadOnlyList<Gsm8kItem> Read(string path, int? limit = null)
    {
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: dataset file not found");
        if (limit is <= 0) return [];
        var items = Utf8Text.JsonLines(path, (root, line) =>
        {
            string question = RequireString(root, "question", path, line), answer = RequireString(root, "answer", path, line);
            if (!answer.Contains(Gsm8kAnswer.Marker, StringComparison.Ordinal))
                throw new DeepSeekSharpException($"{path}:{line}: the answer has no final '{Gsm8kAnswer.Marker} N'");
            string? reference = Gsm8kAnswer.Extract(answer);
            if (Gsm8kAnswer.Value(reference) is null)
                throw new DeepSeekSharpException($"{path}:{line}: no number after the answer's last '{Gsm8kAnswer.Marker}'");
            return new Gsm8kItem(question, answer, reference!, $"{path}:{line}");
        });
        return (limit is int n ? items.Take(n) : items).ToList();
    }

    /// <summary>The prompt of a question: the chat template's rendering of one user turn with the generation prompt.</summary>
    public static string Prompt(ChatTemplate template, string question)
    {
        var user = new OrderedDictionary<string, object?>(StringComparer.Ordinal) { ["role"] = "user", ["content"] = question };
        return template.Render([user], addGenerationPrompt: true);
    }

    /// <summary>Generates an answer to every problem and scores them.</summary>
    /// <param name="model">the loaded model</param>
    /// <param name="tokenizer">encodes prompts (special-token strings the template writes become their ids) and decodes answers</param>
    /// <param name="template">the chat template the model was fine-tuned with</param>
    /// <param name="progress">told as problems finish</param>
    public static Gsm8kResult Evaluate(DeepSeekModel model, ITextTokenizer tokenizer, ChatTemplate template, IReadOnlyList<Gsm8kItem> items,
        Gsm8kOptions? options = null, IProgress<EvalProgress>? progress = null, CancellationToken ct = default)
    {
        options ??= new Gsm8kOptions();
        if (items.Count == 0) throw new DeepSeekSharpException("no GSM8K problems to evaluate");
        if (options.MaxNewTokens <= 0) throw new DeepSeekSharpException($"max new tokens must be positive (got {options.MaxNewTokens})");
        if (options.BatchSize <= 0) throw new DeepSeekSharpException($"batch size must be positive (got {options.BatchSize})");
        var stops = StopTokens(tokenizer, template);
        if (stops.Count == 0) throw new DeepSeekSharpException("the tokenizer has no EOS token to end an answer with");
        var decoder = new CachedDecoder(model);
        var generations = new string[items.Count];
        long generated = 0;
        int cut = 0, done = 0;
        var clock = Stopwatch.StartNew();
        for (int start = 0; start < items.Count; start += options.BatchSize)
        {
            int n = Math.Min(options.BatchSize, items.Count - start);
            var prompts = new int[n][];
            for (int i = 0; i < n; i++)
            {
                prompts[i] = tokenizer.Encode(Prompt(template, items[start + i].Question));
                foreach (int id in prompts[i])
                    if ((uint)id >= (uint)model.Config.VocabSize)
                        throw new DeepSeekSharpException($"{items[start + i].Source}: token id {id} is outside the model's vocabulary [0, {model.Config.VocabSize}) (a tokenizer for another model?)");
                if (prompts[i].Length > model.Config.MaxPositionEmbeddings)
                    throw new DeepSeekSharpException($"{items[start + i].Source}: the prompt of {prompts[i].Length} tokens is longer than the model's context of {model.Config.MaxPositionEmbeddings}");
            }
            BatchedGreedyDecoding.Generate(decoder, prompts, options.MaxNewTokens, stops, tokenizer.VocabSize, (i, continuation) =>
            {
                generations[start + i] = tokenizer.Decode(continuation.Tokens);
                generated += continuation.Tokens.Length;
                if (continuation.FinishReason == "length") cut++;
                progress?.Report(new EvalProgress(++done, items.Count, clock.Elapsed));
            }, ct);
        }
        return Score(items, generations, options.Samples) with { GeneratedTokens = generated, HitTokenLimit = cut, Elapsed = clock.Elapsed };
    }

    /// <summary>Scores given generations (one per problem, in order): the accuracy and the first right and wrong samples.</summary>
    public static Gsm8kResult Score(IReadOnlyList<Gsm8kItem> items, IReadOnlyList<string> generations, int samples = 3)
    {
        if (generations.Count != items.Count) throw new ArgumentException($"{generations.Count} generations for {items.Count} problems", nameof(generations));
        int correct = 0, none = 0;
        var right = new List<Gsm8kSample>();
        var wrong = new List<Gsm8kSample>();
        for (int i = 0; i < items.Count; i++)
        {
            string? predicted = Gsm8kAnswer.Extract(generations[i]);
            bool ok = Gsm8kAnswer.Value(predicted) is decimal v && v == items[i].ReferenceValue;
            if (ok) correct++;
            if (predicted is null) none++;
            var kept = ok ? right : wrong;
            if (kept.Count < samples) kept.Add(new Gsm8kSample(items[i].Source, items[i].Question, items[i].Reference, predicted, ok, generations[i]));
        }
        return new Gsm8kResult(items.Count, correct, none, right, wrong, 0, 0, TimeSpan.Zero);
    }

    /// <summary>The tokenizer's EOS id and the id of the template's EOS string when that is one token.</summary>
    private static HashSet<int> StopTokens(ITextTokenizer tokenizer, ChatTemplate template)
    {
        var stops = new HashSet<int>();
        if (tokenizer.EosId is int eos) stops.Add(eos);
        if (template.EosToken is { Length: > 0 } text && tokenizer.Encode(text) is [int id]) stops.Add(id);
        return stops;
    }

    private static string RequireString(JsonElement root, string key, string path, int line) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? Utf8Text.GetString(v, path, line, key)
            : throw new DeepSeekSharpException($"{path}:{line}: missing string field '{key}'");
}
