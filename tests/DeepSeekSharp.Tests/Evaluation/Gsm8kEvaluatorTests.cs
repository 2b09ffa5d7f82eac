using DeepSeekSharp.Evaluation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;
using ChatTemplate = DeepSeekSharp.FineTuning.ChatTemplate;
using DeepSeekChat = DeepSeekSharp.Inference.ChatTemplate;

namespace DeepSeekSharp.Tests.Evaluation;

/// <summary>GSM8K end to end on a tiny random model with the byte tokenizer, against plain one-prompt generation.</summary>
public class Gsm8kEvaluatorTests
{
    /// <summary>A random tiny model over the byte tokenizer's ids (BOS/EOS 256/257) with a short context.</summary>
    internal static DeepSeekModel TinyModel(int context = 256, int seed = 3) => TinyModels.ByteVocabulary(context, seed);

    internal static readonly (string Question, string Answer)[] Problems =
    [
        ("Tom has 3 apples and buys 4 more. How many apples?", "3 + 4 = 7\n#### 7"),
        ("A box holds 12 eggs. How many eggs are in 2 boxes?", "12 * 2 = 24\n#### 24"),
        ("Sam had $1,500 and spent $250. How much is left?", "1500 - 250 = 1250\n#### 1,250"),
    ];

    [Fact]
    public void TheGsm8kPromptIsTheDeepSeekChatPromptOfTheQuestion()
    {
        var template = ChatTemplate.Resolve("deepseek_v3", null, SftTokenizer.Byte());
        foreach (var (question, _) in Problems)
            Assert.Equal(DeepSeekChat.Render([("user", question)], addGenerationPrompt: true), Gsm8kEvaluator.Prompt(template, question));
    }

    [Fact]
    public void BatchedGreedyDecodingEqualsOnePromptAtATime()
    {
        var model = TinyModel();
        var tokenizer = new ByteTokenizer();
        var decoder = new CachedDecoder(model);
        int[][] prompts = [tokenizer.Encode("Hello there"), tokenizer.Encode("A"), tokenizer.Encode("What is 12 times 2? Think.")];
        var plain = prompts.Select(p => new TextGenerator(decoder, null).Generate(p, new GenerationOptions { MaxNewTokens = 20 }).Tokens).ToArray();
        // A stop token that plain decoding of the second prompt meets and of the first does not: one sequence stops
        // early, another runs to the limit.
        int stop = plain[1].First(t => !plain[0].Contains(t));
        var plainStopped = prompts.Select(p => new TextGenerator(decoder, null).Generate(p, new GenerationOptions { MaxNewTokens = 20, StopTokens = [stop] })).ToArray();
        var batched = BatchedGreedyDecoding.Generate(decoder, prompts, 20, [stop]);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(plainStopped[i].Tokens, batched[i].Tokens);
            Assert.Equal(plainStopped[i].FinishReason, batched[i].FinishReason);
        }
        Assert.Contains(batched, c => c.FinishReason == "stop");
        Assert.Contains(batched, c => c.FinishReason == "length" && c.Tokens.Length == 20);
    }

    [Fact]
    public void GenerationStopsAtTheEndOfTheContext()
    {
        var model = TinyModel(context: 64);
        var prompt = Enumerable.Range(0, 60).Select(i => 65 + i % 26).ToArray();
        var result = BatchedGreedyDecoding.Generate(new CachedDecoder(model), [prompt], 100, []);
        // 60 prompt positions + 4 fed-back tokens fill the 64 positions; the fifth token needs no position of its own.
        Assert.Equal(5, result[0].Tokens.Length);
        Assert.Equal("length", result[0].FinishReason);
    }

    [Fact]
    public void EvaluationScoresWhatTheModelGeneratesGreedily()
    {
        var model = TinyModel();
        var sft = SftTokenizer.Byte();
        var template = ChatTemplate.Resolve("deepseek_v3", null, sft);
        var items = Problems.Select((p, i) => new Gsm8kItem(p.Question, p.Answer, Gsm8kAnswer.Extract(p.Answer)!, $"test:{i + 1}")).ToList();
        var reports = new List<EvalProgress>();
        var result = Gsm8kEvaluator.Evaluate(model, sft.Tokenizer, template, items, new Gsm8kOptions { MaxNewTokens = 24, BatchSize = 2 },
            new SyncProgress(reports.Add));
        Assert.Equal(3, result.Examples);
        Assert.InRange(result.Accuracy, 0, 1);
        Assert.Equal(result.Correct, result.Right.Count);
        Assert.Equal(3, result.Right.Count + result.Wrong.Count);
        Assert.Equal([1, 2, 3], reports.Select(r => r.Done).Order());
        // Each sample's generation is what plain greedy decoding of its prompt gives (EOS stops both).
        var generator = new TextGenerator(new CachedDecoder(model), sft.Tokenizer);
        foreach (var sample in result.Right.Concat(result.Wrong))
        {
            var item = items.Single(i => i.Source == sample.Source);
            int[] prompt = sft.Tokenizer.Encode(DeepSeekChat.Render([("user", item.Question)], addGenerationPrompt: true));
            var plain = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 24, StopTokens = [ByteTokenizer.Eos] });
            Assert.Equal(plain.Text, sample.Generation);
            Assert.Equal(Gsm8kAnswer.Extract(plain.Text!), sample.Predicted);
        }
        Assert.InRange(result.GeneratedTokens, 1, 3 * 24);
    }

    private sealed class SyncProgress(Action<EvalProgress> report) : IProgress<EvalProgress>
    {
        public void Report(EvalProgress value) => report(value);
    }
}
