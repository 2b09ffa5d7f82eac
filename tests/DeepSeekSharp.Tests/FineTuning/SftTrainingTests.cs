using System.Text.Json;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Tests.Training;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// <c>dss train</c> on fine-tuning data: the loss is the global batch's mean over trained tokens however it is split
/// into micro-batches, packing changes nothing of the step, and frozen parameters stay as they were without gradients
/// or optimizer state.
/// </summary>
public sealed class SftTrainingTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    /// <summary>Sixteen prompt/answer examples whose trained lengths differ a lot (input_output, byte tokenizer).</summary>
    private string Dataset()
    {
        string path = Path.Combine(_dir, "qa.jsonl");
        var rng = new Random(11);
        var lines = Enumerable.Range(0, 16).Select(i =>
        {
            string prompt = $"Q{i}: " + new string('a', 3 + rng.Next(25)) + "?\n";
            string answer = "A: " + string.Concat(Enumerable.Repeat("yes ", 1 + rng.Next(8))) + "\n";
            return JsonSerializer.Serialize(new { segments = new object[] { new { text = prompt, label = false }, new { text = answer, label = true } } });
        });
        File.WriteAllLines(path, lines);
        return path;
    }

    private string Config(string output, params string[] extra)
    {
        string path = Path.Combine(_dir, Path.GetFileName(output) + ".yaml");
        File.WriteAllText(path, $"""
            model_preset: tiny-v3
            tokenizer: byte
            datasets:
              - path: {Dataset()}
                type: input_output
            val_set_size: 0
            sequence_len: 64
            max_steps: 1
            warmup_steps: 0
            learning_rate: 1e-3
            eval_steps: 1000
            eval_batches: 0
            sample_tokens: 0
            logging_steps: 1
            save_steps: 1000
            seed: 5
            threads: 1
            output_dir: {output}
            {string.Join("\n", extra)}
            """);
        return path;
    }

    private static JsonElement FirstStep(string output) =>
        File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .First(r => r.GetProperty("kind").GetString() == "train");

    private static void Train(string config, params string[] overrides) =>
        Trainer.Run(TrainConfig.Load(config, overrides), new TrainOptions(), null, _ => { }, TestContext.Current.CancellationToken);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FourMicroBatchesOfOneGiveTheStepOfOneMicroBatchOfFour(bool packing)
    {
        string one = Path.Combine(_dir, "one"), four = Path.Combine(_dir, "four");
        Train(Config(one, $"sample_packing: {packing.ToString().ToLowerInvariant()}"), "micro_batch_size=4", "gradient_accumulation_steps=1");
        Train(Config(four, $"sample_packing: {packing.ToString().ToLowerInvariant()}"), "micro_batch_size=1", "gradient_accumulation_steps=4");
        JsonElement a = FirstStep(one), b = FirstStep(four);
        Assert.Equal(a.GetProperty("trained_tokens").GetInt64(), b.GetProperty("trained_tokens").GetInt64());
        // Same rows, same sums; only the order in which the weight gradients add up differs (see PackingTests).
        Assert.Equal(a.GetProperty("loss").GetDouble(), b.GetProperty("loss").GetDouble(), 5);
        Assert.Equal(a.GetProperty("mtp_loss").GetDouble(), b.GetProperty("mtp_loss").GetDouble(), 5);
        double na = a.GetProperty("grad_norm").GetDouble(), nb = b.GetProperty("grad_norm").GetDouble();
        Assert.True(Math.Abs(na - nb) <= 1e-5 * na, $"grad norm {na} vs {nb}");
    }

    [Fact]
    public void MicroBatchLossesAddUpToTheGlobalMeanWhereAveragingTheirMeansWouldNot()
    {
        // Four examples with 1, 2, 7 and 13 trained targets: the global mean weighs every token alike; the mean of the
        // micro-batch means (the bug fixed in HF/TRL in October 2024) weighs the short example's token 13× more.
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        int[][] ids = [[3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]];
        int[][] labels = [[-100, -100, 5], [-100, -100, 8, 9], [-100, 11, 12, 13, 14, 15, 16, 17], [-100, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]];
        var rows = Enumerable.Range(0, 4).Select(i => (Ids: ids[i], Labels: labels[i], Geometry: SequenceBatch.Training(1, ids[i].Length))).ToList();
        var divisor = new[] { rows.Sum(r => LanguageModelLoss.CountTargets(r.Labels, r.Geometry, 0)[0]) };
        Assert.Equal(23, divisor[0]);

        double summed = 0, meanOfMeans = 0;
        using (GradMode.NoGrad())
            foreach (var r in rows)
            {
                summed += LanguageModelLoss.Compute(model, r.Ids, r.Geometry, 0, 0, r.Labels, divisor).Total.Data[0];
                meanOfMeans += LanguageModelLoss.Compute(model, r.Ids, r.Geometry, 0, 0, r.Labels).Total.Data[0] / 4;
            }
        // The global mean computed independently: per-token losses from full logits, summed, over the 23 targets.
        double total = 0;
        using (GradMode.NoGrad())
            foreach (var r in rows)
            {
                var logits = model.Forward(r.Ids, r.Geometry).Logits.Span;
                int v = model.Config.VocabSize;
                for (int i = 0; i + 1 < r.Ids.Length; i++)
                {
                    if (r.Labels[i + 1] < 0) continue;
                    var row = logits.Slice(i * v, v);
                    float max = float.NegativeInfinity;
                    foreach (float x in row) max = Math.Max(max, x);
                    double sum = 0;
                    foreach (float x in row) sum += Math.Exp(x - max);
                    total += max + Math.Log(sum) - row[r.Labels[i + 1]];
                }
            }
        Assert.Equal(total / 23, summed, 5);
        Assert.True(Math.Abs(meanOfMeans - summed) > 1e-3, $"mean of means {meanOfMeans} vs global mean {summed}");
    }

    [Fact]
    public void FrozenParametersStayBitIdenticalAndHaveNoOptimizerState()
    {
        // A base model (two pre-training steps), then fine-tuning of the routed experts only.
        string corpus = TinyRun.Corpus(_dir), baseRun = Path.Combine(_dir, "base"), tuned = Path.Combine(_dir, "tuned");
        TinyRun.Train(TinyRun.Settings(corpus, baseRun, "max_steps=2", "save_steps=2"));
        string baseCheckpoint = Path.Combine(baseRun, "checkpoint-2");
        var logs = new List<string>();
        var cfg = TrainConfig.Load(Config(tuned, $"base_model: {baseCheckpoint}", "unfrozen_parameters:", "  - mlp\\.experts\\."),
            ["max_steps=3", "save_steps=3", "model_preset=null"]);
        Trainer.Run(cfg, new TrainOptions(), null, logs.Add, TestContext.Current.CancellationToken);
        Assert.Contains(logs, l => l.StartsWith("freezing: ", StringComparison.Ordinal) && l.Contains("routing bias(es) frozen"));

        using var before = SafeTensorsReader.Open(Path.Combine(baseCheckpoint, "model.safetensors"));
        using var after = SafeTensorsReader.Open(Path.Combine(tuned, "checkpoint-3", "model.safetensors"));
        int changed = 0, same = 0;
        foreach (var entry in before.Tensors)
        {
            bool trainable = entry.Name.Contains("mlp.experts.", StringComparison.Ordinal);
            var a = before.ReadFloat32(entry.Name);
            var b = after.ReadFloat32(entry.Name);
            if (trainable) changed += a.SequenceEqual(b) ? 0 : 1;
            else
            {
                Assert.True(a.SequenceEqual(b), $"{entry.Name} is frozen but changed");
                same++;
            }
        }
        Assert.True(changed > 0 && same > 0, $"{changed} trainable tensors changed, {same} frozen ones checked");
        using var optimizer = SafeTensorsReader.Open(Path.Combine(tuned, "checkpoint-3", CheckpointStore.OptimizerFile));
        Assert.NotEmpty(optimizer.Tensors);
        Assert.All(optimizer.Tensors, t => Assert.Contains("mlp.experts.", t.Name));
    }

    [Fact]
    public void AFrozenParameterGetsNoGradientBufferAndNoMoments()
    {
        var model = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        var result = ParameterFreezing.Apply(model, [], ["^model\\.embed_tokens\\.", "self_attn"]);
        var optimizer = new AdamW(model.NamedParameters());
        var loss = LanguageModelLoss.Compute(model, [1, 2, 3, 4, 5, 6, 7, 8], SequenceBatch.Training(1, 8), 0.3f, 1);
        Backprop.Backward(loss.Total, freeActivations: true);
        optimizer.Update(1e-3f);
        long trainable = 0;
        foreach (var (name, p) in model.NamedParameters())
        {
            bool frozen = name.StartsWith("model.embed_tokens.", StringComparison.Ordinal) || name.Contains("self_attn", StringComparison.Ordinal);
            Assert.Equal(!frozen, p.RequiresGrad);
            if (frozen) Assert.Null(p.Grad);
            else trainable += p.Length;
        }
        Assert.Equal(trainable, result.TrainableElements);
        Assert.Equal(trainable * 2 * sizeof(float), optimizer.StateBytes); // m and v of the trainable ones only
    }

    [Theory]
    [InlineData("unfrozen_parameters=[nothing_like_this]", "matches no parameter")]
    [InlineData("unfrozen_parameters=[(unclosed]", "not a valid regex")]
    [InlineData("frozen_parameters=[.]", "every parameter is frozen")]
    public void BadFreezingIsOneClearLine(string setting, string message)
    {
        string output = Path.Combine(_dir, "bad");
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => Train(Config(output), setting));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(output) && Directory.EnumerateDirectories(output, "checkpoint-*").Any());
    }

    [Fact]
    public void PreTrainingTextAndFineTuningDataDoNotMix()
    {
        string text = TinyRun.Corpus(_dir), output = Path.Combine(_dir, "mixed");
        string config = Path.Combine(_dir, "mixed.yaml");
        File.WriteAllText(config, $"""
            model_preset: tiny-v3
            datasets:
              - path: {Dataset()}
                type: input_output
              - path: {text}
                type: text
            output_dir: {output}
            """);
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => Train(config));
        Assert.Contains("a run trains on one kind", e.Message);
    }

    [Fact]
    public void AFineTunedCheckpointCarriesItsTokenizerChatTemplateAndSpecialIds()
    {
        string data = Path.Combine(_dir, "gsm8k.jsonl"), output = Path.Combine(_dir, "chat");
        File.WriteAllLines(data, Enumerable.Range(1, 8).Select(i => JsonSerializer.Serialize(new { question = $"What is {i} + {i}?", answer = $"{i} + {i} = {2 * i}\n#### {2 * i}" })));
        string config = Path.Combine(_dir, "chat.yaml");
        File.WriteAllText(config, $"""
            model_preset: tiny-v3
            chat_template: deepseek_v3
            datasets:
              - path: {data}
                type: gsm8k
            test_datasets:
              - path: {data}
                type: gsm8k
            eval_gsm8k_problems: 3
            sequence_len: 64
            micro_batch_size: 2
            max_steps: 2
            eval_steps: 2
            sample_tokens: 0
            save_steps: 2
            threads: 1
            output_dir: {output}
            """);
        Train(config);
        string checkpoint = Path.Combine(output, "checkpoint-2");
        using var tokenizerConfig = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "tokenizer_config.json")));
        Assert.Equal(BuiltInChatTemplates.DeepSeekV3, tokenizerConfig.RootElement.GetProperty("chat_template").GetString());
        using var modelConfig = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "config.json")));
        using var generation = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "generation_config.json")));
        Assert.Equal(DeepSeekSharp.Tokenization.ByteTokenizer.Eos, modelConfig.RootElement.GetProperty("eos_token_id").GetInt32());
        Assert.Equal(DeepSeekSharp.Tokenization.ByteTokenizer.Eos, generation.RootElement.GetProperty("eos_token_id").GetInt32());
        Assert.Equal("float32", modelConfig.RootElement.GetProperty("torch_dtype").GetString());
        // The test set was evaluated: masked loss per trained token, and the first 3 problems answered greedily with the
        // weights of that step, the same answers `dss eval --metric gsm8k` gives from the saved checkpoint.
        var eval = File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Single(r => r.GetProperty("kind").GetString() == "eval");
        Assert.True(eval.GetProperty("val_loss").GetDouble() > 0);
        var saved = ModelCheckpoint.Load(checkpoint);
        var sft = SftTokenizer.Load(Path.Combine(checkpoint, "tokenizer.json"));
        var items = DeepSeekSharp.Evaluation.Gsm8kEvaluator.Read(data, 3);
        var again = DeepSeekSharp.Evaluation.Gsm8kEvaluator.Evaluate(saved, sft.Tokenizer, ChatTemplate.Resolve("tokenizer_default", null, sft), items);
        Assert.Equal((float)again.Accuracy, eval.GetProperty("gsm8k_accuracy").GetSingle());
    }
}
