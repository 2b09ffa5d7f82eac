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

/// <summary>What a GRPO run did: test accuracy before and after (NaN without a test set, or after a stop), the steps taken.</summary>
/// <param name="Interrupted">the run stopped early (<see cref="GrpoRunOptions.StopAtStep"/>) after saving its last step</param>
public sealed record GrpoResult(double AccuracyBefore, double AccuracyAfter, int Steps, string FinalCheckpoint, bool Interrupted = false);

/// <summary>How to run a GRPO config.</summary>
/// <param name="StopAtStep">save and stop after this step, as if interrupted (tests and experiments)</param>
/// <param name="Resume">continue the run in output_dir from its latest checkpoint, exactly (policy, AdamW moments and step; the
/// sampling streams, data order, schedule and reference follow from the config and the step)</param>
/// <param name="Overwrite">start a new run in an output_dir that holds a previous one, deleting its checkpoints and metrics</param>
public sealed record GrpoRunOptions(int? StopAtStep = null, bool Resume = false, bool Overwrite = false);

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
    private readonly string? _resumeFrom;
    private readonly int _startStep;
    private readonly Queue<double> _tiedHistory = new();

    /// <summary>The GRPO-only part of a checkpoint's state (next to trainer_state.json): the tied-groups window of the warning.</summary>
    private const string StateFile = "grpo_state.json";

    private GrpoTrainer(GrpoConfig cfg, GrpoRunOptions opts, Action<string> log)
    {
        (_cfg, _log) = (cfg, log);
        string tokenizerFile = Path.Combine(cfg.BaseModel, "tokenizer.json");
        if (!File.Exists(tokenizerFile)) throw new DeepSeekSharpException($"{cfg.BaseModel}: the model folder has no tokenizer.json");
        _tokenizer = SftTokenizer.Load(tokenizerFile);
        _template = FineTuning.ChatTemplate.Resolve(cfg.ChatTemplate, null, _tokenizer);
        _rewards = RewardSet.FromNames(cfg.RewardFuncs, cfg.RewardWeights, Directory.GetCurrentDirectory());
        if (opts.Resume)
            _resumeFrom = CheckpointStore.Latest(cfg.OutputDir) ?? throw new DeepSeekSharpException($"{cfg.OutputDir}: no checkpoint-<step> folder to resume from");
        // A full policy resumes from the checkpoint's weights; a LoRA policy from the base plus the checkpoint's adapters.
        _policy = ModelCheckpoint.Load(_resumeFrom is not null && cfg.Adapter != "lora" ? _resumeFrom : cfg.BaseModel);
        if (cfg.Adapter == "lora")
        {
            _lora = new LoraSettings(cfg.LoraR, cfg.LoraAlpha, cfg.LoraTargetModules, cfg.LoraTargetLinear);
            log($"lora: {(_resumeFrom is null ? LoraAdapters.Apply(_policy, _lora, cfg.Seed) : LoraAdapters.Load(_policy, _resumeFrom)).Summary}");
        }
        else if (cfg.Beta != 0)
        {
            _reference = ModelCheckpoint.Load(cfg.BaseModel);
            foreach (var (_, p) in _reference.NamedParameters()) p.RequiresGrad = false;
        }
        _trained = _policy.NamedParameters().Where(p => p.Parameter.RequiresGrad).Select(p => p.Parameter).ToList();
        _optimizer = new AdamW(_policy.NamedParameters()) { Beta1 = cfg.AdamBeta1, Beta2 = cfg.AdamBeta2, WeightDecay = cfg.WeightDecay };
        if (_resumeFrom is not null)
        {
            // AdamW's moments and step: the same pieces `dss train --resume` restores (exact or refused).
            _startStep = checked((int)CheckpointStore.LoadTrainingState(_resumeFrom, _optimizer).GlobalStep);
            string statePath = Path.Combine(_resumeFrom, StateFile);
            if (!File.Exists(statePath)) throw new DeepSeekSharpException($"{statePath}: missing, so the run cannot continue exactly");
            try
            {
                foreach (double f in System.Text.Json.JsonSerializer.Deserialize<GrpoState>(File.ReadAllText(statePath))?.TiedHistory ?? [])
                    _tiedHistory.Enqueue(f);
            }
            catch (System.Text.Json.JsonException e) { throw new DeepSeekSharpException($"{statePath}: invalid GRPO state ({e.Message})"); }
            log($"resumed from {_resumeFrom} at step {_startStep}");
        }
        _stops = [];
        if (_tokenizer.Tokenizer.EosId is int eos) _stops.Add(eos);
        if (_stops.Count == 0) throw new DeepSeekSharpException($"{tokenizerFile}: the tokenizer has no EOS token to end a completion with");
    }

    public static GrpoResult Run(GrpoConfig cfg, Action<string> log, CancellationToken ct) => Run(cfg, new GrpoRunOptions(), log, ct);

    /// <summary>Runs GRPO in <c>cfg.OutputDir</c>, which this process owns until it returns (<see cref="RunFolder"/>).</summary>
    public static GrpoResult Run(GrpoConfig cfg, GrpoRunOptions opts, Action<string> log, CancellationToken ct)
    {
        if (opts.Resume && opts.Overwrite) throw new DeepSeekSharpException($"{cfg.OutputDir}: --overwrite starts a new run and --resume continues this one; give one of them");
        using var folder = RunFolder.Acquire(cfg.OutputDir);
        if (!opts.Resume) folder.StartFresh(opts.Overwrite, [cfg.BaseModel, cfg.Dataset, cfg.TestDataset]);
        return new GrpoTrainer(cfg, opts, log).Loop(opts.StopAtStep, ct);
    }

    private sealed record GrpoState(double[] TiedHistory);

    private GrpoResult Loop(int? stopAtStep, CancellationToken ct)
    {
        var items = Gsm8kEvaluator.Read(_cfg.Dataset);
        if (items.Count == 0) throw new DeepSeekSharpException($"{_cfg.Dataset}: the dataset has no prompts");
        var test = _cfg.TestDataset.Length > 0 ? Gsm8kEvaluator.Read(_cfg.TestDataset, _cfg.EvalLimit > 0 ? _cfg.EvalLimit : null) : null;
        double recordedBefore = _resumeFrom is null ? double.NaN : RecordedAccuracy(MetricsLog.JsonlFile(_cfg.OutputDir), 0);
        // A resumed run drops the records its predecessor wrote after the checkpoint, so the file reads as one run.
        using var metrics = new MetricsLog(_cfg.OutputDir, _resumeFrom is null ? null : _startStep);
        double before = _resumeFrom is null ? Evaluate(test, metrics, 0) : recordedBefore;
        var schedule = new LrSchedule(_cfg.LrScheduler, _cfg.LearningRate, _cfg.WarmupSteps, _cfg.MaxSteps);
        var order = Enumerable.Range(0, items.Count).ToArray();
        new Random(_cfg.Seed).Shuffle(order);
        string last = _resumeFrom ?? "";
        for (int step = _startStep + 1; step <= _cfg.MaxSteps; step++)
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
            _tiedHistory.Enqueue(tiedFraction);
            if (_tiedHistory.Count > 5) _tiedHistory.Dequeue();
            if (_tiedHistory.Count == 5 && _tiedHistory.All(f => f >= 0.9))
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
            bool stop = step == stopAtStep && step < _cfg.MaxSteps;
            if (_cfg.SaveSteps > 0 && step % _cfg.SaveSteps == 0 || step == _cfg.MaxSteps || stop) last = Save(step);
            if (stop)
            {
                _log($"stopped at step {step}; continue with --resume");
                return new GrpoResult(before, double.NaN, step, last, Interrupted: true);
            }
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

    /// <summary>
    /// checkpoint-STEP: the policy (a model folder, or a PEFT adapter folder for a LoRA policy) with the tokenizer, plus
    /// what a resume needs: AdamW's moments and step (<see cref="CheckpointStore"/>'s files) and the GRPO state.
    /// </summary>
    private string Save(int step)
    {
        string tokenizerConfig = Path.Combine(_cfg.BaseModel, "tokenizer_config.json");
        var state = new GrpoState([.. _tiedHistory]);
        return CheckpointStore.Save(_cfg.OutputDir, new TrainerState(step, _optimizer.Step), _policy, _policy.Config.ToJson(), _optimizer,
            Path.Combine(_cfg.BaseModel, "tokenizer.json"), File.Exists(tokenizerConfig) ? File.ReadAllText(tokenizerConfig) : null, keep: 0,
            _lora, _lora is null ? null : _cfg.BaseModel,
            writeExtra: tmp => IO.AtomicFile.WriteAllText(Path.Combine(tmp, StateFile), System.Text.Json.JsonSerializer.Serialize(state)));
    }

    /// <summary>The accuracy of the eval record of <paramref name="step"/> in a metrics file (a resumed run's "before"), NaN if none.</summary>
    private static double RecordedAccuracy(string metricsFile, int step)
    {
        if (!File.Exists(metricsFile)) return double.NaN;
        foreach (var line in File.ReadLines(metricsFile))
        {
            if (string.IsNullOrWhiteSpace(line) || !line.TrimEnd().EndsWith('}')) continue;       // a line torn by a kill
            using var doc = System.Text.Json.JsonDocument.Parse(line);
            var r = doc.RootElement;
            if (r.GetProperty("kind").GetString() == "eval" && r.GetProperty("step").GetInt64() == step
                && r.TryGetProperty("accuracy", out var a) && a.ValueKind == System.Text.Json.JsonValueKind.Number)
                return a.GetDouble();
        }
        return double.NaN;
    }

    private static double Mean(IReadOnlyList<float> x) => x.Count == 0 ? double.NaN : x.Average(v => (double)v);

    private static double Std(float[] x) => GroupAdvantages.UnbiasedStd(x);
}
