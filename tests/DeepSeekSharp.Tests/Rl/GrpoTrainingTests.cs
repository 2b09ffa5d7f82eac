using DeepSeekSharp.Autograd;
using DeepSeekSharp.Inference;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Rl;
using DeepSeekSharp.Tests.Training;

namespace DeepSeekSharp.Tests.Rl;

/// <summary>GRPO end to end on a tiny model: rollouts' log-probabilities, a LoRA policy over a frozen base, a full policy with μ = 2.</summary>
public sealed class GrpoTrainingTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    [Fact]
    public void RolloutLogProbsEqualThoseOfTheTrainingForward()
    {
        var model = TinyModels.ByteVocabulary(context: 64, seed: 3);
        List<int[]> prompts = [[72, 105, 33], [10, 20, 30, 40, 50]];
        Rollout[] rollouts;
        using (GradMode.NoGrad())
            rollouts = RolloutSampler.Generate(new CachedDecoder(model), prompts, generations: 3, maxCompletionLength: 12, stopTokens: new HashSet<int> { 0 },
                new SamplingOptions { Temperature = 0.8f }, seed: 5);
        Assert.Equal(6, rollouts.Length);
        Assert.Equal([0, 0, 0, 1, 1, 1], rollouts.Select(r => r.Prompt));
        Assert.True(rollouts.Select(r => string.Join(",", r.Completion)).Distinct().Count() > 1, "samples of one prompt should differ");
        var packed = GrpoTrainer.Pack(prompts, rollouts, [.. Enumerable.Range(0, rollouts.Length)], new float[rollouts.Length]);
        float[] trained;
        using (GradMode.NoGrad())
            trained = Functional.TokenLogProbs(model.ForwardHidden(packed.Tokens, packed.Batch).Hidden, model.LmHead.Weight, packed.Targets, 0.8f).Span.ToArray();
        var sampled = rollouts.SelectMany(r => r.LogProbs).ToArray();
        var actions = Enumerable.Range(0, trained.Length).Where(t => packed.CompletionOfRow[t] >= 0).Select(t => trained[t]).ToArray();
        Assert.Equal(sampled.Length, actions.Length);
        for (int i = 0; i < sampled.Length; i++) Assert.True(Math.Abs(sampled[i] - actions[i]) < 2e-4, $"token {i}: sampled {sampled[i]}, training forward {actions[i]}");
        // Same seed, same rollouts, whatever else ran in between.
        Rollout[] again;
        using (GradMode.NoGrad())
            again = RolloutSampler.Generate(new CachedDecoder(model), prompts, 3, 12, new HashSet<int> { 0 }, new SamplingOptions { Temperature = 0.8f }, seed: 5);
        Assert.Equal(rollouts.Select(r => r.Completion), again.Select(r => r.Completion));
    }

    [Fact]
    public void FirstTokensOfAGroupFollowTheTemperedSoftmaxOfThePromptsLogits()
    {
        // Every completion's first token is drawn from the prompt's one logits row (the prompt is encoded once): 20,000
        // draws against softmax(z/τ) computed here directly, in total variation (about 0.06 expected from sampling alone).
        var model = TinyModels.ByteVocabulary(context: 64, seed: 4);
        int[] prompt = [72, 105, 33, 10];
        const float Tau = 0.7f;
        const int Draws = 20000;
        float[] z;
        Rollout[] rollouts;
        using (GradMode.NoGrad())
        {
            var decoder = new CachedDecoder(model);
            z = decoder.ForwardLastLogits([(prompt, decoder.NewCache())]).Span.ToArray();
            rollouts = RolloutSampler.Generate(new CachedDecoder(model), [prompt], Draws, 1, new HashSet<int>(), new SamplingOptions { Temperature = Tau }, seed: 9);
        }
        double max = z.Max(), total = z.Sum(v => Math.Exp((v - max) / Tau));
        var counts = new int[z.Length];
        foreach (var r in rollouts) counts[r.Completion[0]]++;
        double tv = 0;
        for (int t = 0; t < z.Length; t++) tv += Math.Abs(counts[t] / (double)Draws - Math.Exp((z[t] - max) / Tau) / total);
        Assert.True(tv / 2 < 0.1, $"total variation {tv / 2:F3}");
        // Each recorded log-probability is the token's own under the same distribution.
        foreach (var r in rollouts.Take(50))
            Assert.True(Math.Abs(r.LogProbs[0] - ((z[r.Completion[0]] - max) / Tau - Math.Log(total))) < 1e-4);
    }

    private string Task()
    {
        string data = Path.Combine(_dir, "arith");
        ArithmeticTask.Write(data, 60, 8, seed: 2, maxOperand: 30, operators: "+");
        return data;
    }

    private string[] Settings(string baseModel, string data, string output, params string[] extra) =>
    [
        $"base_model={baseModel}", $"dataset={Path.Combine(data, "train.jsonl")}", $"test_dataset={Path.Combine(data, "test.jsonl")}",
        "num_generations=4", "prompts_per_step=2", "micro_batch_size=3", "max_completion_length=10", "max_steps=2",
        $"reward_funcs=['regex:^[0-9]', '{typeof(OddFirstCharReward).Assembly.Location}:{typeof(OddFirstCharReward).FullName}']", "reward_weights=[0.5, 1.0]", "learning_rate=1e-2", $"output_dir={output}", "seed=3", .. extra,
    ];

    private static List<System.Text.Json.JsonElement> Records(string output, string kind) =>
        File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
            .Where(r => r.GetProperty("kind").GetString() == kind).ToList();

    [Fact]
    public void ALoraPolicyTrainsItsAdaptersAndLeavesTheBaseAlone()
    {
        string baseModel = TinyRun.BaseCheckpoint(_dir), data = Task(), output = Path.Combine(_dir, "grpo");
        var logs = new List<string>();
        var result = GrpoTrainer.Run(GrpoConfig.Load(null, Settings(baseModel, data, output,
            "adapter=lora", "lora_r=4", "lora_alpha=8", "lora_target_linear=true", "beta=0.04")), logs.Add, TestContext.Current.CancellationToken);
        Assert.Equal(2, result.Steps);
        Assert.False(double.IsNaN(result.AccuracyBefore));
        var train = Records(output, "train");
        Assert.Equal([1L, 2L], train.Select(r => r.GetProperty("step").GetInt64()));
        foreach (var key in new[] { "reward", "reward_std", "kl", "clip_ratio/low", "frac_reward_zero_std", "rewards/regex/mean", "completions/mean_length", "rollout_tokens_per_s" })
            Assert.True(train[1].TryGetProperty(key, out _), key);
        Assert.Contains(train, r => r.GetProperty("frac_reward_zero_std").GetDouble() < 1);  // a learning signal
        Assert.Equal(2, Records(output, "eval").Count);
        // The adapters moved (B starts at zero); the base the run read is untouched.
        using var adapter = SafeTensorsReader.Open(Path.Combine(result.FinalCheckpoint, "adapter_model.safetensors"));
        Assert.Contains(adapter.Tensors, t => t.Name.EndsWith("lora_B.weight", StringComparison.Ordinal) && adapter.ReadFloat32(t.Name).Any(v => v != 0));
        Assert.True(File.Exists(Path.Combine(result.FinalCheckpoint, "adapter_config.json")));
        Assert.Contains(logs, l => l.StartsWith("step 2/2", StringComparison.Ordinal));
    }

    [Fact]
    public void AFullPolicyWithTwoIterationsClipsAndMoves()
    {
        string baseModel = TinyRun.BaseCheckpoint(_dir), data = Task(), output = Path.Combine(_dir, "grpo");
        var result = GrpoTrainer.Run(GrpoConfig.Load(null, Settings(baseModel, data, output, "num_iterations=2", "beta=0.1", "epsilon=0.05", "learning_rate=5e-2", "test_dataset=")),
            _ => { }, TestContext.Current.CancellationToken);
        Assert.True(double.IsNaN(result.AccuracyBefore));
        var train = Records(output, "train");
        Assert.Contains(train, r => r.GetProperty("clip_ratio/low").GetDouble() + r.GetProperty("clip_ratio/high").GetDouble() > 0);
        DeepSeekModel baseline = ModelCheckpoint.Load(baseModel), trained = ModelCheckpoint.Load(result.FinalCheckpoint);
        var before = baseline.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Span.ToArray());
        Assert.Contains(trained.NamedParameters(), p => !p.Parameter.Span.ToArray().SequenceEqual(before[p.Name]));
        // The routing biases are not balanced during RL: they stay as the base had them.
        var biases = baseline.NamedBuffers().Where(b => b.Name.EndsWith("e_score_correction_bias", StringComparison.Ordinal)).ToDictionary(b => b.Name, b => b.Buffer.Span.ToArray());
        Assert.NotEmpty(biases);
        foreach (var (name, buffer) in trained.NamedBuffers().Where(b => biases.ContainsKey(b.Name))) Assert.Equal(biases[name], buffer.Span.ToArray());
    }

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    public void AStoppedAndResumedRunEndsBitwiseEqualToAnUninterruptedOne(string policy)
    {
        string baseModel = TinyRun.BaseCheckpoint(_dir), data = Task();
        string whole = Path.Combine(_dir, "whole"), split = Path.Combine(_dir, "split");
        // μ = 2 and β > 0: AdamW's moments and step, the reference policy and the clipping all carry into the resumed steps.
        string[] extra = policy == "lora"
            ? ["adapter=lora", "lora_r=4", "lora_alpha=8", "lora_target_linear=true", "beta=0.04", "num_iterations=2", "max_steps=4", "save_steps=1"]
            : ["num_iterations=2", "beta=0.1", "learning_rate=5e-2", "max_steps=4", "save_steps=1", "test_dataset="];
        var ct = TestContext.Current.CancellationToken;
        var full = GrpoTrainer.Run(GrpoConfig.Load(null, Settings(baseModel, data, whole, extra)), new GrpoRunOptions(), _ => { }, ct);
        var stopped = GrpoTrainer.Run(GrpoConfig.Load(null, Settings(baseModel, data, split, extra)), new GrpoRunOptions(StopAtStep: 2), _ => { }, ct);
        Assert.True(stopped.Interrupted);
        Assert.Equal(2, stopped.Steps);
        Assert.False(Directory.Exists(Path.Combine(split, "checkpoint-3")));
        // A fresh run refuses the folder of a stopped one; --resume continues it.
        Assert.ThrowsAny<DeepSeekSharpException>(() => GrpoTrainer.Run(GrpoConfig.Load(null, Settings(baseModel, data, split, extra)), new GrpoRunOptions(), _ => { }, ct));
        var logs = new List<string>();
        var resumed = GrpoTrainer.Run(GrpoConfig.Load(null, Settings(baseModel, data, split, extra)), new GrpoRunOptions(Resume: true), logs.Add, ct);
        Assert.Contains(logs, l => l.StartsWith("resumed from", StringComparison.Ordinal) && l.EndsWith("at step 2", StringComparison.Ordinal));
        Assert.Equal(4, resumed.Steps);
        Assert.False(resumed.Interrupted);
        Assert.Equal(full.AccuracyBefore, resumed.AccuracyBefore);
        Assert.Equal(full.AccuracyAfter, resumed.AccuracyAfter);
        // Every file of every checkpoint, byte for byte (weights or adapters, AdamW moments, trainer and GRPO state, tokenizer).
        for (int step = 1; step <= 4; step++)
        {
            string a = Path.Combine(whole, $"checkpoint-{step}"), b = Path.Combine(split, $"checkpoint-{step}");
            var files = Directory.GetFiles(a).Select(Path.GetFileName).Order().ToList();
            Assert.Equal(files, Directory.GetFiles(b).Select(Path.GetFileName).Order().ToList());
            Assert.Contains("optimizer.safetensors", files);
            foreach (var file in files) Assert.True(File.ReadAllBytes(Path.Combine(a, file!)).SequenceEqual(File.ReadAllBytes(Path.Combine(b, file!))), $"checkpoint-{step}/{file}");
        }
        // The logged records, all but the wall-clock rates, one per step as in the uninterrupted run.
        static string Logged(string output) => string.Join("\n", File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l =>
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(l)!.AsObject();
            node.Remove("rollout_tokens_per_s");
            node.Remove("train_tokens_per_s");
            return node.ToJsonString();
        }));
        Assert.Equal(Logged(whole), Logged(split));
        Assert.Equal([1L, 2L, 3L, 4L], Records(split, "train").Select(r => r.GetProperty("step").GetInt64()));
    }

    [Theory]
    [InlineData("num_generations=1", "num_generations")]
    [InlineData("loss_type=ppo", "loss_type")]
    [InlineData("no_such_key=1", "no_such_key")]
    public void BadConfigIsOneClearLine(string setting, string message)
    {
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => GrpoConfig.Load(null, ["base_model=b", "dataset=d.jsonl", setting]));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}

/// <summary>A reward that splits a random policy's samples about in half: 1 when the completion's first character has an odd code.</summary>
public sealed class OddFirstCharReward : DeepSeekSharp.Rl.Rewards.IRewardFunction
{
    public string Name => "odd_first";
    public float? Score(DeepSeekSharp.Rl.Rewards.RewardInput input) => input.Completion.Length > 0 && input.Completion[0] % 2 == 1 ? 1f : 0f;
}
