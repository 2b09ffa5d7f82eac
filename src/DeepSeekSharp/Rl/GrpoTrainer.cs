using System.Diagnostics;
using System.Globalization;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Evaluation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Rl.Rewards;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Rl;

/// <summary>What a GRPO run did: test accuracy before and after (NaN without a test set) and the steps taken.</summary>
public sealed record GrpoResult(double AccuracyBefore, double AccuracyAfter, int Steps, string FinalCheckpoint);

/// <summary>
/// GRPO after SFT (DeepSeekMath, DeepSeek-R1), one step at a time: sample G completions of each prompt with the
/// latent-cache decoder, score them with the reward functions, turn the rewards into group-relative advantages, and
/// take μ optimizer steps on <see cref="GrpoObjective"/> over those completions, computing the sampled tokens'
/// log-probabilities with the training forward (<see cref="Functional.TokenLogProbs"/>). The routing biases are not
/// updated (the balancer is not run), so routing moves only through the router's weights. With a LoRA policy the
/// reference is the same model with its adapters switched off: no second copy.
/// </summary>
public sealed class GrpoTrainer
{
    private readonly GrpoConfig _cfg;
    private readonly Action<string> _log;
    private readonly DeepSeekModel _policy;
    private readonly DeepSeekModel? _reference;
    private readonly SftTokenizer _tokenizer;
    private readonly FineTuning.ChatTemplate _template;
    private readonly RewardSet _rewards;
    private readonly AdamW _optimizer;
    private readonly List<Parameter> _trained;
    private readonly HashSet<int> _stops;
    private readonly LoraSettings? _lora;

    private GrpoTrainer(GrpoConfig cfg, Action<string> log)
    {
        (_cfg, _log) = (cfg, log);
        string tokenizerFile = Path.Combine(cfg.BaseModel, "tokenizer.json");
        if (!File.Exists(tokenizerFile)) throw new DeepSeekSharpException($"{cfg.BaseModel}: the model folder has no tokenizer.json");
        _tokenizer = SftTokenizer.Load(tokenizerFile);
        _template = FineTuning.ChatTemplate.Resolve(cfg.ChatTemplate, null, _tokenizer);
        _rewards = RewardSet.FromNames(cfg.RewardFuncs, cfg.RewardWeights, Directory.GetCurrentDirectory());
        _policy = ModelCheckpoint.Load(cfg.BaseModel);
        if (cfg.Adapter == "lora")
        {
            _lora = new LoraSettings(cfg.LoraR, cfg.LoraAlpha, cfg.LoraTargetModules, cfg.LoraTargetLinear);
            log($"lora: {LoraAdapters.Apply(_policy, _lora, cfg.Seed).Summary}");
        }
        else if (cfg.Beta != 0)
        {
            _reference = ModelCheckpoint.Load(cfg.BaseModel);
            foreach (var (_, p) in _reference.NamedParameters()) p.RequiresGrad = false;
        }
        _trained = _policy.NamedParameters().Where(p => p.Parameter.RequiresGrad).Select(p => p.Parameter).ToList();
        _optimizer = new AdamW(_policy.NamedParameters()) { Beta1 = cfg.AdamBeta1, Beta2 = cfg.AdamBeta2, WeightDecay = cfg.WeightDecay };
        _stops = [];
        if (_tokenizer.Tokenizer.EosId is int eos) _stops.Add(eos);
        if (_stops.Count == 0) throw new DeepSeekSharpException($"{tokenizerFile}: the tokenizer has no EOS token to end a completion with");
    }

    public static GrpoResult Run(GrpoConfig cfg, Action<string> log, CancellationToken ct) => new GrpoTrainer(cfg, log).Loop(ct);

    private GrpoResult Loop(CancellationToken ct)
    {
        var items = Gsm8kEvaluator.Read(_cfg.Dataset);
        if (items.Count == 0) throw new DeepSeekSharpException($"{_cfg.Dataset}: the dataset has no prompts");
        var test = _cfg.TestDataset.Length > 0 ? Gsm8kEvaluator.Read(_cfg.TestDataset, _cfg.EvalLimit > 0 ? _cfg.EvalLimit : null) : null;
        Directory.CreateDirectory(_cfg.OutputDir);
        using var metrics = new MetricsLog(_cfg.OutputDir);
        double before = Evaluate(test, metrics, 0);
        var schedule = new LrSchedule(_cfg.LrScheduler, _cfg.LearningRate, _cfg.WarmupSteps, _cfg.MaxSteps);
        var order = Enumerable.Range(0, items.Count).ToArray();
        new Random(_cfg.Seed).Shuffle(order);
        var tiedHistory = new Queue<double>();
        string last = "";
        for (int step = 1; step <= _cfg.MaxSteps; step++)
        {
            ct.ThrowIfCancellationRequested();
            var stepItems = Enumerable.Range(0, _cfg.PromptsPerStep).Select(j => items[order[((step - 1) * _cfg.PromptsPerStep + j) % items.Count]]).ToList();
            var prompts = stepItems.Select(i => _tokenizer.Tokenizer.Encode(Gsm8kEvaluator.Prompt(_template, i.Question))).ToList();

            var clock = Stopwatch.StartNew();
            Rollout[] rollouts;
            using (GradMode.NoGrad())
                rollouts = RolloutSampler.Generate(new CachedDecoder(_policy), prompts, _cfg.NumGenerations, _cfg.MaxCompletionLength, _stops,
                    new SamplingOptions { Temperature = _cfg.Temperature, TopP = _cfg.TopP, TopK = _cfg.TopK }, RolloutSampler.StreamSeed(_cfg.Seed, step),
                    _tokenizer.Tokenizer.VocabSize, ct);
            double rolloutSeconds = clock.Elapsed.TotalSeconds;
            long completionTokens = rollouts.Sum(r => (long)r.Completion.Length);

            var inputs = rollouts.Select(r => new RewardInput(stepItems[r.Prompt].Question, _tokenizer.Tokenizer.Decode(r.Text.ToArray()), stepItems[r.Prompt].Answer)).ToList();
            var scores = _rewards.Score(inputs);
            foreach (var problem in scores.Problems) _log($"warning: {problem}");
            var advantages = GroupAdvantages.Compute(scores.Total, _cfg.NumGenerations, _cfg.Scaling);

            clock.Restart();
            var stats = Optimize(prompts, rollouts, advantages.Advantages, schedule.At(step), ct);
            double trainSeconds = clock.Elapsed.TotalSeconds;

            double tiedFraction = (double)advantages.TiedGroups / _cfg.PromptsPerStep;
            tiedHistory.Enqueue(tiedFraction);
            if (tiedHistory.Count > 5) tiedHistory.Dequeue();
            if (tiedHistory.Count == 5 && tiedHistory.All(f => f >= 0.9))
                _log($"warning: step {step}: for 5 steps ≥ 90% of the groups had tied rewards (no learning signal): the task is too hard or too easy for the policy, or the temperature too low");
            if (step % _cfg.LoggingSteps == 0 || step == _cfg.MaxSteps)
            {
                var record = new Dictionary<string, object>
                {
                    ["loss"] = stats.Loss, ["reward"] = Mean(scores.Total), ["reward_std"] = Std(scores.Total), ["kl"] = stats.Kl,
                    ["clip_ratio/low"] = stats.LowClip, ["clip_ratio/high"] = stats.HighClip, ["grad_norm"] = stats.GradNorm,
                    ["lr"] = schedule.At(step), ["frac_reward_zero_std"] = tiedFraction,
                    ["completions/mean_length"] = (double)completionTokens / rollouts.Length,
                    ["completions/min_length"] = rollouts.Min(r => r.Completion.Length), ["completions/max_length"] = rollouts.Max(r => r.Completion.Length),
                    ["completions/clipped_ratio"] = rollouts.Count(r => r.FinishReason == "length") / (double)rollouts.Length,
                    ["rollout_tokens_per_s"] = completionTokens / Math.Max(1e-9, rolloutSeconds),
                    ["train_tokens_per_s"] = stats.Tokens / Math.Max(1e-9, trainSeconds),
                };
                foreach (var (name, values) in scores.PerFunction)
                {
                    var scored = values.Where(float.IsFinite).ToArray();
                    record[$"rewards/{name}/mean"] = scored.Length > 0 ? Mean(scored) : double.NaN;
                    record[$"rewards/{name}/skipped"] = values.Length - scored.Length;
                }
                metrics.Write("train", step, record);
                _log(string.Create(CultureInfo.InvariantCulture,
                    $"step {step}/{_cfg.MaxSteps}  reward {Mean(scores.Total):F3} ± {Std(scores.Total):F3}  kl {stats.Kl:F4}  clip {stats.LowClip + stats.HighClip:P1}  len {(double)completionTokens / rollouts.Length:F1}  tied {tiedFraction:P0}  rollout {completionTokens / Math.Max(1e-9, rolloutSeconds):F0} tok/s  train {stats.Tokens / Math.Max(1e-9, trainSeconds):F0} tok/s"));
            }
            if (_cfg.SaveSteps > 0 && step % _cfg.SaveSteps == 0 || step == _cfg.MaxSteps) last = Save(step);
        }
        double after = Evaluate(test, metrics, _cfg.MaxSteps);
        return new GrpoResult(before, after, _cfg.MaxSteps, last);
    }

    private sealed record StepStats(double Loss, double Kl, double LowClip, double HighClip, float GradNorm, long Tokens);

    /// <summary>μ optimizer steps over the step's rollouts, micro-batch by micro-batch.</summary>
    private StepStats Optimize(List<int[]> prompts, Rollout[] rollouts, float[] advantages, float lr, CancellationToken ct)
    {
        var size = new GrpoBatchSize(rollouts.Length, rollouts.Sum(r => (long)r.Completion.Length));
        float[]?[] behaviour = new float[]?[(rollouts.Length + _cfg.MicroBatchSize - 1) / _cfg.MicroBatchSize];
        double loss = 0, klSum = 0;
        long low = 0, high = 0, tokens = 0;
        float gradNorm = 0;
        for (int iteration = 0; iteration < _cfg.NumIterations; iteration++)
        {
            _policy.ZeroGrad();
            for (int mb = 0, start = 0; start < rollouts.Length; mb++, start += _cfg.MicroBatchSize)
            {
                ct.ThrowIfCancellationRequested();
                var members = Enumerable.Range(start, Math.Min(_cfg.MicroBatchSize, rollouts.Length - start)).ToArray();
                var packed = Pack(prompts, rollouts, members, advantages);
                float[]? reference = _cfg.Beta != 0 ? ReferenceLogProbs(packed) : null;
                using var scope = TensorScope.Begin();
                var hidden = _policy.ForwardHidden(packed.Tokens, packed.Batch).Hidden;
                var logp = Functional.TokenLogProbs(hidden, _policy.LmHead.Weight, packed.Targets, _cfg.Temperature);
                // μ > 1: the first pass's log-probabilities are the behaviour policy's (exactly the sampled model's).
                if (_cfg.NumIterations > 1 && iteration == 0) behaviour[mb] = logp.Span.ToArray();
                var terms = GrpoObjective.Evaluate(logp.Span, new GrpoTokens(packed.CompletionOfRow, packed.Advantages, iteration == 0 ? null : behaviour[mb], reference),
                    _cfg.Settings, size);
                Backprop.Backward(Functional.Dot(logp, terms.LogProbGradient), freeActivations: true);
                // Loss and KL as the rollouts were scored (the first pass); clipping over every pass (only later ones can clip).
                if (iteration == 0) (loss, klSum, tokens) = (loss + terms.Loss, klSum + terms.KlSum, tokens + terms.Tokens);
                (low, high) = (low + terms.LowClipped, high + terms.HighClipped);
            }
            gradNorm = GradClip.ClipGlobalNorm(_trained, _cfg.MaxGradNorm);
            _optimizer.Update(lr);
        }
        double n = Math.Max(1, tokens), passes = n * _cfg.NumIterations;
        return new StepStats(loss, klSum / n, low / passes, high / passes, gradNorm, tokens * _cfg.NumIterations);
    }

    /// <summary>Micro-batch rows: each completion with its prompt as one isolated document, packed into one sequence.</summary>
    internal sealed record PackedRollouts(int[] Tokens, SequenceBatch Batch, int[] Targets, int[] CompletionOfRow, float[] Advantages);

    internal static PackedRollouts Pack(List<int[]> prompts, Rollout[] rollouts, int[] members, float[] advantages)
    {
        var tokens = new List<int>();
        var targets = new List<int>();
        var completionOf = new List<int>();
        var lengths = new List<int>();
        var adv = new float[members.Length];
        for (int m = 0; m < members.Length; m++)
        {
            var r = rollouts[members[m]];
            int[] prompt = prompts[r.Prompt];
            adv[m] = advantages[members[m]];
            // Rows: prompt + completion, the last completion token not fed (nothing is predicted from it). Row i
            // predicts token i + 1; the rows predicting completion tokens are the policy's actions.
            int rows = prompt.Length + r.Completion.Length - 1;
            for (int i = 0; i < rows; i++)
            {
                tokens.Add(i < prompt.Length ? prompt[i] : r.Completion[i - prompt.Length]);
                bool action = i >= prompt.Length - 1;
                targets.Add(action ? r.Completion[i - prompt.Length + 1] : -1);
                completionOf.Add(action ? m : -1);
            }
            lengths.Add(rows);
        }
        var batch = SequenceBatch.Packed(tokens.Count, [lengths]);
        return new PackedRollouts([.. tokens], batch, [.. targets], [.. completionOf], adv);
    }

    private float[] ReferenceLogProbs(PackedRollouts packed)
    {
        using var noGrad = GradMode.NoGrad();
        using var scope = TensorScope.Begin();
        var model = _reference ?? _policy;
        // A LoRA policy's reference is its base: the adapters are switched off for this forward.
        var adapters = _reference is null ? model.NamedModules().Select(m => m.Module).OfType<Linear>().Where(l => l.Adapter is not null).Select(l => (l, l.Adapter!)).ToList() : [];
        foreach (var (linear, _) in adapters) linear.Adapter = null;
        try
        {
            var hidden = model.ForwardHidden(packed.Tokens, packed.Batch).Hidden;
            return Functional.TokenLogProbs(hidden, model.LmHead.Weight, packed.Targets, _cfg.Temperature).Span.ToArray();
        }
        finally
        {
            foreach (var (linear, adapter) in adapters) linear.Adapter = adapter;
        }
    }

    private double Evaluate(IReadOnlyList<Gsm8kItem>? test, MetricsLog metrics, int step)
    {
        if (test is null || test.Count == 0) return double.NaN;
        Gsm8kResult result;
        using (GradMode.NoGrad())
            result = Gsm8kEvaluator.Evaluate(_policy, _tokenizer.Tokenizer, _template, test, new Gsm8kOptions { MaxNewTokens = _cfg.MaxCompletionLength });
        metrics.Write("eval", step, new Dictionary<string, object> { ["accuracy"] = result.Accuracy, ["examples"] = result.Examples });
        _log(string.Create(CultureInfo.InvariantCulture, $"eval at step {step}: accuracy {result.Accuracy:P1} ({result.Correct}/{result.Examples}) on {_cfg.TestDataset}"));
        return result.Accuracy;
    }

    private string Save(int step)
    {
        string dir = Path.Combine(_cfg.OutputDir, $"checkpoint-{step}");
        IO.AtomicFolder.Write(dir, tmp =>
        {
            if (_lora is not null) LoraAdapters.WriteFiles(_policy, tmp, _lora, Path.GetFullPath(_cfg.BaseModel));
            else ModelCheckpoint.Save(_policy, tmp, overwrite: true);
            foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json" })
                if (File.Exists(Path.Combine(_cfg.BaseModel, file))) File.Copy(Path.Combine(_cfg.BaseModel, file), Path.Combine(tmp, file));
        }, replace: true);
        return dir;
    }

    private static double Mean(IReadOnlyList<float> x) => x.Count == 0 ? double.NaN : x.Average(v => (double)v);

    private static double Std(float[] x) => GroupAdvantages.UnbiasedStd(x);
}
