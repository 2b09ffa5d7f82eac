using System.Diagnostics;
using System.Text.Json;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Training;

/// <summary>Command-line controls of one run (not part of the YAML).</summary>
/// <param name="StopAtStep">save and stop after this step as if interrupted (the schedule still follows MaxSteps)</param>
/// <param name="ResumeDir">an output folder whose latest checkpoint to continue from</param>
/// <param name="ResumeWeightsOnly">resume from the checkpoint's weights even when its optimizer state (or trainer state) is
/// missing: AdamW restarts from zero moments, so the run is not an exact continuation (said in the log)</param>
/// <param name="Overwrite">start a new run in an output folder that holds a previous one (its checkpoints, metrics and
/// TensorBoard events are deleted first); without it such a folder is refused</param>
public sealed record TrainOptions(int? StopAtStep = null, string? ResumeDir = null, bool ResumeWeightsOnly = false, bool Overwrite = false)
{
    public void Validate()
    {
        if (StopAtStep is < 1) throw new DeepSeekSharpException($"--stop-at-step: must be ≥ 1 (got {StopAtStep})");
    }
}

/// <summary>Reported after every optimizer step.</summary>
public sealed record TrainProgress(long Step, long TotalSteps, float Loss, float LearningRate, double TokensPerSecond);

/// <summary>How a run ended.</summary>
public sealed record TrainResult(long FinalStep, string? LastCheckpoint, float? LastValidationLoss, bool Interrupted);

/// <summary>
/// The pre-training loop (training.md): AdamW with the chosen schedule, gradient accumulation and clipping, MTP with
/// the λ schedule, auxiliary-loss-free bias balancing (or the aux-loss baseline), periodic validation (loss,
/// bits per byte, MaxVio), samples, metrics, and atomic checkpoints that <c>--resume</c> continues exactly.
/// </summary>
public sealed class Trainer
{
    private readonly TrainConfig _cfg;
    private readonly TrainOptions _opts;
    private readonly Action<string> _log;
    private readonly ITextTokenizer _tokenizer;
    private readonly DeepSeekModel _model;
    private readonly DataParallel _parallel;
    private readonly ExpertParallel _experts;
    private readonly IOptimizer _optimizer;
    private readonly BiasBalancer _balancer;
    private readonly string _configJson;
    private readonly string? _tokenizerFile;
    private string? _tokenizerConfigJson;
    private readonly string? _resumedFrom;
    private readonly bool _resumedInPlace;
    private readonly Stopwatch _clock = new();
    private readonly double _elapsedBefore;
    private long _step;
    private long _savedStep;
    private long _tokensSeen;
    private readonly FineTuning.FreezeResult? _freezing;
    // Fine-tuning runs with eval_gsm8k_problems: the problems, the tokenizer and the chat template to answer them with.
    private (IReadOnlyList<Evaluation.Gsm8kItem> Items, ITextTokenizer Tokenizer, FineTuning.ChatTemplate Template)? _gsm8k;
    private FineTuning.Lora.LoraApplyResult? _lora;
    private FineTuning.Esft.ExpertConfig? _esft;

    private Trainer(TrainConfig cfg, TrainOptions opts, bool resumeInPlace, Distributed.ICommunicator world,
        (Distributed.ICommunicator? Group, Distributed.ICommunicator ExpertData) expertGroups, Action<string> log, CancellationToken ct)
    {
        _cfg = cfg;
        _opts = opts;
        _log = log;
        (_tokenizer, _tokenizerFile) = TokenizerFactory.Create(cfg, log, ct);
        _tokenizerConfigJson = _tokenizerFile is null ? null : ModelTokenizer.ConfigJsonFor(_tokenizerFile, _tokenizer as HfTokenizer ?? HfTokenizer.Load(_tokenizerFile));
        string? resumeFrom = opts.ResumeDir is null ? null : CheckpointStore.Latest(opts.ResumeDir)
            ?? throw new DeepSeekSharpException($"{opts.ResumeDir}: no checkpoint-<step> folder to resume from");
        (_model, _configJson) = resumeFrom is not null ? LoadForResume(resumeFrom) : BuildModel();
        if (cfg.Lora is { } lora && resumeFrom is null)
        {
            _lora = FineTuning.Lora.LoraAdapters.Apply(_model, lora, cfg.Seed);
            log($"lora: {_lora.Summary}");
        }
        else if (FineTuning.Esft.EsftTraining.Experts(cfg, _model, resumeFrom, log, ct) is { } experts)
        {
            _esft = experts;
            _freezing = FineTuning.Esft.EsftTraining.Freeze(_model, experts);
            log($"esft: {experts.SelectedCount} routed expert(s) train in {experts.Experts.Count} layer(s); {_freezing.Summary}");
        }
        else if (cfg.UnfrozenParameters.Count > 0 || cfg.FrozenParameters.Count > 0)
        {
            _freezing = FineTuning.ParameterFreezing.Apply(_model, cfg.UnfrozenParameters, cfg.FrozenParameters);
            log($"freezing: {_freezing.Summary}");
        }
        // Linears an adapter run trains whole (lora_modules_to_save) need their fp32 weight back.
        foreach (var name in FineTuning.FrozenBaseStorage.WidenTrainable(_model)) log($"base_model_precision: {name} is trained, so it is kept in fp32");
        // The checkpoints' config and generation_config carry the special ids of the tokenizer the run uses.
        _configJson = WithSpecialTokens(_configJson, _tokenizer);
        ct.ThrowIfCancellationRequested();
        if (_model.Config.VocabSize < _tokenizer.VocabSize)
            throw new DeepSeekSharpException($"the model's vocab_size {_model.Config.VocabSize} is smaller than the tokenizer's {_tokenizer.VocabSize}");
        // Gradients, AdamW's two moments and the reduction's buffers come on top of the weights: refuse now rather than
        // at the first step.
        long trainable = _model.NamedParameters().Where(p => p.Parameter.RequiresGrad).Sum(p => p.Parameter.Length);
        ModelFootprint.EnsureFits(_model.Config, FineTuning.FrozenBaseStorage.WeightBytes(_model)
            + DataParallel.TrainingStateBytes(trainable, cfg.MomentPrecision, cfg.GradientAccumulationSteps, world.Size, cfg.ZeroStage),
            "training it (weights, gradients, AdamW moments and the gradient reduction's buffers)");
        var adamW = new AdamW(_model.NamedParameters())
        {
            Beta1 = cfg.AdamBeta1, Beta2 = cfg.AdamBeta2, Eps = cfg.AdamEpsilon, WeightDecay = cfg.WeightDecay,
            Moments = cfg.MomentPrecision,
        };
        _balancer = new BiasBalancer(_model);
        if (_freezing is not null) _balancer.FreezeBiases(_freezing.FrozenBuffers);
        // The adapter file holds no routing biases, so a LoRA run keeps the base's: the frozen base is the base on disk.
        if (_lora is not null) _balancer.FreezeBiases(_model.NamedBuffers().Select(b => b.Buffer).ToHashSet<Tensors.Tensor>(ReferenceEqualityComparer.Instance));
        DeepSeekSharp.Fp8.Fp8Training.Apply(_model, cfg.Precision, cfg.Fp8SwigluCache, cfg.Fp8E5M6OProj, cfg.Fp8Bf16Combine);
        _model.RecomputeNorms(cfg.RecomputeNorms);
        _model.RecomputeMlaUpProjections(cfg.RecomputeMlaUp);
        // After every change to the parameters (adapters, freezing, FP8 copies): the shards and buckets hold their arrays.
        if (cfg.ExpertParallelSize > 1 && (_lora is not null || _esft is not null || _freezing is not null))
            throw new DeepSeekSharpException("expert_parallel_size: expert parallelism trains every weight (no adapter, no freezing)");
        _experts = ExpertParallel.Create(world, expertGroups, _model, Distributed.RowExchange.Parse(cfg.EpDispatch, "ep_dispatch"),
            Distributed.RowExchange.Parse(cfg.EpCombine, "ep_combine"));
        _parallel = new DataParallel(world, _model.NamedParameters().ToList(), cfg.GradientAccumulationSteps, cfg.ZeroStage, adamW, _experts);
        _optimizer = _parallel.Optimizer;
        if (resumeFrom is not null)
        {
            var state = CheckpointStore.LoadTrainingState(resumeFrom, _optimizer, opts.ResumeWeightsOnly);
            (_step, _savedStep, _tokensSeen, _elapsedBefore) = (state.GlobalStep, state.GlobalStep, state.Tokens, state.ElapsedSeconds);
            (_resumedFrom, _resumedInPlace) = (resumeFrom, resumeInPlace);
            log(opts.ResumeWeightsOnly
                ? $"resumed from the weights of {resumeFrom} at step {_step} (--resume-weights-only): AdamW starts again from zero moments, so this run will not match an uninterrupted one"
                : $"resumed from {resumeFrom} at step {_step}");
        }
    }

    /// <summary>
    /// Runs training in <c>cfg.OutputDir</c>, which this process owns until it returns (<see cref="RunFolder"/>).
    /// Cancelling <paramref name="ct"/> stops promptly: before the first step by OperationCanceledException, later by
    /// saving the current step (a save in progress completes) and returning an interrupted result.
    /// </summary>
    public static TrainResult Run(TrainConfig cfg, TrainOptions opts, IProgress<TrainProgress>? progress, Action<string> log, CancellationToken ct)
    {
        using var world = new Distributed.SingleProcessCommunicator();
        return Run(cfg, opts, world, progress, log, ct);
    }

    /// <summary>
    /// Runs training as one rank of <paramref name="world"/> (data parallel: every rank calls this with the same
    /// config). Rank 0 owns the output folder, logs, reports progress and writes metrics and checkpoints; the other
    /// ranks write nothing there and report nothing.
    /// </summary>
    public static TrainResult Run(TrainConfig cfg, TrainOptions opts, Distributed.ICommunicator world, IProgress<TrainProgress>? progress, Action<string> log, CancellationToken ct)
    {
        opts.Validate();
        bool root = world.Rank == 0;
        if (!root) (progress, log) = (null, _ => { });
        using var folder = root ? RunFolder.Acquire(cfg.OutputDir) : null;
        bool resumeInPlace = opts.ResumeDir is not null && IO.AtomicFolder.Canonical(opts.ResumeDir) == IO.AtomicFolder.Canonical(cfg.OutputDir);
        if (resumeInPlace && opts.Overwrite)
            throw new DeepSeekSharpException($"{cfg.OutputDir}: --overwrite starts a new run and --resume continues this one; give one of them");
        if (!resumeInPlace)
            folder?.StartFresh(opts.Overwrite, cfg.Datasets.Select(d => d.Path).Concat([cfg.BaseModel, cfg.ModelConfig, cfg.Tokenizer, opts.ResumeDir]));
        // Rank 0 writes the tokenizer file and the token cache first (Loop's barrier); the others then find them ready
        // and only read, instead of racing to write the same files.
        // Splitting the world is a collective too, so it comes before that barrier.
        var expertGroups = ExpertParallel.SplitWorld(world, cfg.ExpertParallelSize);
        if (!root) world.Barrier();
        var trainer = new Trainer(cfg, opts, resumeInPlace, world, expertGroups, log, ct);
        try { return trainer.Loop(progress, ct); }
        finally
        {
            trainer._parallel.Dispose();
            trainer._experts.Dispose();
            if (root) Reporting.RunReport.WriteAfterTraining(cfg.OutputDir, log);
        }
    }

    private static string WithSpecialTokens(string configJson, ITextTokenizer tokenizer)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(configJson)!.AsObject();
        if (tokenizer.BosId is int bos) node["bos_token_id"] = bos;
        if (tokenizer.EosId is int eos) node["eos_token_id"] = eos;
        return node.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private (DeepSeekModel, string) LoadForResume(string checkpoint)
    {
        if (_cfg.Lora is not null)
        {
            // A LoRA checkpoint is an adapter folder: the base comes from base_model, the adapters from the checkpoint.
            var (baseModel, json) = BuildModel();
            _lora = FineTuning.Lora.LoraAdapters.Load(baseModel, checkpoint);
            _log($"lora: {_lora.Summary}");
            return (baseModel, json);
        }
        if (_cfg.Adapter == "esft")
        {
            // An ESFT adapter checkpoint holds the trained experts; the rest is the base's.
            var (baseModel, json) = BuildModel();
            _log($"esft: {FineTuning.Esft.EsftAdapter.Load(baseModel, checkpoint).Summary}");
            return (baseModel, json);
        }
        var model = ModelCheckpoint.Load(checkpoint);
        return (model, File.ReadAllText(Path.Combine(checkpoint, "config.json")));
    }

    private (DeepSeekModel, string) BuildModel()
    {
        if (_cfg.BaseModel is not null)
        {
            string baseJson = File.ReadAllText(Path.Combine(_cfg.BaseModel, "config.json"));
            // An adapter run saves only its adapters, so its frozen base may stay as stored; a full fine-tuning run
            // saves every weight and keeps them in fp32.
            var storage = _cfg.Adapter is not null ? FineTuning.FrozenBaseStorage.Resolve(_cfg.BaseModelPrecision, DeepSeekConfig.Load(Path.Combine(_cfg.BaseModel, "config.json")))
                : Tensors.WeightStorage.Fp32;
            _log($"loading base model {_cfg.BaseModel}{(storage == Tensors.WeightStorage.Fp32 ? "" : $" (frozen Linears kept as {(storage == Tensors.WeightStorage.Bf16 ? "BF16" : "FP8 blocks")})")}");
            var frozen = FineTuning.FrozenBaseStorage.Load(_cfg.BaseModel, storage);
            long mapped = FineTuning.FrozenBaseStorage.MappedBytes(frozen);
            if (mapped > 0) _log($"frozen base: {mapped / 1e9:F2} GB of FP8 codes mapped from the checkpoint files (file-backed pages, not copied)");
            return (frozen, baseJson);
        }
        string json;
        if (_cfg.ModelConfig is not null) json = IO.InputFile.ReadAllText(ModelCheckpoint.ConfigPath(_cfg.ModelConfig), "config file");
        else
        {
            string preset = _cfg.ModelPreset ?? "tiny-v3";
            if (!Presets.All.TryGetValue(preset, out json!)) throw new DeepSeekSharpException($"model_preset: unknown preset '{preset}'");
            // A preset takes the tokenizer's vocabulary (rounded up to a multiple of 8).
            var node = System.Text.Json.Nodes.JsonNode.Parse(json)!;
            node["vocab_size"] = (_tokenizer.VocabSize + 7) / 8 * 8;
            json = node.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        }
        var config = DeepSeekConfig.Parse(json, _cfg.ModelConfig ?? "model_preset");
        if (_cfg.InitStd > 0) config = config with { InitializerRange = _cfg.InitStd };
        var model = new DeepSeekModel(config, materialize: true);
        ModelInit.InitializeRandom(model, _cfg.Seed);
        if (_cfg.InitUlpNudge > 0) ModelInit.NudgeMatrices(model, _cfg.InitUlpNudge);
        return (model, json);
    }

    private int MtpDepth => _cfg.MtpDepth < 0 ? _model.MtpModules.Count : Math.Min(_cfg.MtpDepth, _model.MtpModules.Count);

    private TrainResult Loop(IProgress<TrainProgress>? progress, CancellationToken ct)
    {
        var cfg = _cfg;
        bool fineTuning = FineTuning.SftDatasets.IsFineTuning(cfg);
        using var pretraining = fineTuning ? null : TrainingData.Prepare(cfg, _tokenizer, _tokenizer is ByteTokenizer ? "byte" : _tokenizerFile ?? "byte", _log, ct);
        ITrainingBatches data = pretraining is not null ? pretraining : PrepareFineTuning(ct);
        if (_parallel.IsRoot) _parallel.Barrier(); // the files the other ranks wait for (Run) are written
        _log(data.Summary);
        using var distillation = Distillation.DistillationTrainerLoss.Create(cfg, _model, _log);
        using var metrics = _parallel.IsRoot ? new MetricsLog(cfg.OutputDir, _resumedInPlace ? _step : null) : null;
        if (_parallel.IsRoot) IO.AtomicFile.WriteAllText(Path.Combine(cfg.OutputDir, TrainConfig.RunFileName), cfg.ToJson());
        var schedule = new LrSchedule(cfg.LrScheduler, cfg.LearningRate, cfg.WarmupSteps, cfg.MaxSteps, cfg.MinLrRatio);
        // This rank's micro-batches per step; the global batch is accum × ranks micro-batches.
        int accum = _parallel.MicroBatchesPerRank;
        long stopAt = Math.Min(cfg.MaxSteps, _opts.StopAtStep ?? long.MaxValue);
        var microBatches = new TrainingBatch[accum];
        string? lastCheckpoint = _resumedFrom;
        float? lastVal = null;
        _clock.Start();
        _log($"training {SummaryLine()} for steps {_step + 1}..{stopAt} of {cfg.MaxSteps}");
        if (_parallel.Ranks > 1 || cfg.ZeroStage > 0) _log(_parallel.Summary);

        while (_step < stopAt)
        {
            // Every rank stops at the same step, whichever saw the signal.
            if (_parallel.Any(ct.IsCancellationRequested))
            {
                // A step is saved once: a stop right after a periodic save keeps that checkpoint as it is.
                if (_savedStep < _step) lastCheckpoint = SaveCheckpoint();
                return new TrainResult(_step, lastCheckpoint, lastVal, Interrupted: true);
            }
            long step = _step + 1;
            var stepClock = Stopwatch.StartNew();
            var (dispatchBefore, combineBefore) = (_experts.Traffic.DispatchBytes, _experts.Traffic.CombineBytes);
            _model.ZeroGrad();
            float lambda = step <= cfg.MtpLambdaSwitch * cfg.MaxSteps ? cfg.MtpLambda : cfg.MtpLambdaLate;
            double lossSum = 0, mainSum = 0, mtpSum = 0, auxSum = 0;
            // Every loss term is divided by the trained targets of the whole global batch (not averaged per micro-batch),
            // so the micro-batches add up to the global batch's mean however the trained tokens fall among them.
            int depth = lambda > 0 ? MtpDepth : 0;
            var divisors = new long[depth + 1];
            long computedTokens = 0, trainedTokens = 0;
            for (int micro = 0; micro < accum; micro++)
            {
                var mb = microBatches[micro] = data.Train(_parallel.GlobalMicroBatch(_step, micro));
                var counts = LanguageModelLoss.CountTargets(mb.Labels, mb.Geometry, depth);
                for (int k = 0; k <= depth; k++) divisors[k] += counts[k];
                computedTokens += mb.Tokens.Length;
                trainedTokens += counts[0];
            }
            // The divisors and token counts are the global batch's (integer sums: exact on any number of ranks).
            var tokenCounts = new[] { computedTokens, trainedTokens };
            _parallel.SumCounts(divisors);
            _parallel.SumCounts(tokenCounts);
            (computedTokens, trainedTokens) = (tokenCounts[0], tokenCounts[1]);
            // Per micro-batch: total, main, MTP and balance loss, summed below in global micro-batch order.
            var perMicro = new double[accum * 4];
            for (int micro = 0; micro < accum; micro++)
            {
                var mb = microBatches[micro];
                // The micro-batch's tensors live until its backward ran; whatever is left then goes back to the pool.
                using var microBatchTensors = TensorScope.Begin();
                // Masks keyed by the micro-batch's index in the global batch: the same draws on any number of ranks.
                using var loraDropout = _lora?.Dropout.Begin(cfg.Seed, step, _parallel.MicroBatchInStep(micro));
                var loss = distillation?.Compute(_model, mb, lambda, depth, divisors)
                    ?? LanguageModelLoss.Compute(_model, mb.Tokens, mb.Geometry, lambda, depth, mb.Labels, divisors);
                var (total, aux) = AddBalanceLoss(loss.Total, mb.Geometry, 1f / _parallel.MicroBatchesPerStep);
                Backprop.Backward(total, freeActivations: true);
                _parallel.AddMicroBatch();
                _balancer.Accumulate();
                perMicro[4 * micro] = total.Data[0];
                perMicro[4 * micro + 1] = loss.MainLoss;
                perMicro[4 * micro + 2] = loss.MtpLosses.Length > 0 ? loss.MtpLosses.Average() : 0;
                perMicro[4 * micro + 3] = aux;
            }
            var sums = _parallel.SumInGlobalOrder(perMicro, 4);
            (lossSum, mainSum, mtpSum, auxSum) = (sums[0], sums[1], sums[2], sums[3]);
            float gradNorm = _parallel.ReduceAndClip(cfg.MaxGradNorm);
            float lr = schedule.At(step);
            _parallel.Update(lr);
            // Bias balancing follows the expert loads of the whole global batch.
            foreach (var gateCounts in _balancer.Counts) _parallel.SumCounts(gateCounts);
            var balance = _balancer.Update(cfg.Balancing == "bias" ? cfg.BiasUpdateSpeed : 0f);
            _step = step;
            _tokensSeen += computedTokens;
            double tps = computedTokens / stepClock.Elapsed.TotalSeconds;
            float mainLoss = (float)mainSum;
            // The update may have made weights non-finite while this step's loss (computed before it) was fine.
            long badWeights = NonFiniteWeights();
            bool diverged = !float.IsFinite(mainLoss) || badWeights > 0;
            progress?.Report(new TrainProgress(step, stopAt, mainLoss, lr, tps));

            if (metrics is not null && (diverged || step % cfg.LoggingSteps == 0 || step == stopAt))
                metrics.Write("train", step, StepRecord(_experts, dispatchBefore, combineBefore, new Dictionary<string, object>
                {
                    ["tokens"] = _tokensSeen, ["trained_tokens"] = trainedTokens, ["loss"] = mainLoss, ["total_loss"] = (float)lossSum,
                    ["mtp_loss"] = (float)mtpSum, ["balance_loss"] = (float)auxSum, ["lr"] = lr,
                    ["grad_norm"] = gradNorm, ["tokens_per_s"] = Math.Round(tps, 1),
                    ["max_vio"] = balance.ModelMean, ["elapsed_s"] = Math.Round(Elapsed, 2),
                    ["max_vio_per_layer"] = balance.PerGate,
                }));
            if (diverged)
                throw new DeepSeekSharpException($"{cfg.OutputDir}: step {step} diverged ("
                    + (badWeights > 0 ? $"{badWeights:N0} weights are NaN/Inf after its update" : $"loss is {mainLoss}")
                    + $"); nothing of it was saved, the last good checkpoint is {lastCheckpoint ?? "none (no save yet)"}; lower learning_rate");
            // Validation and samples run on rank 0 only (the others wait for it at the next step's first collective);
            // under expert parallelism every rank runs them, as each MoE layer's experts are spread over its group.
            if ((metrics is not null || _experts.Size > 1) && (step % cfg.EvalSteps == 0 || step == cfg.MaxSteps))
            {
                // Under expert parallelism every rank's forward is a collective, so no rank may leave it alone: a stop
                // request is taken at the next step's agreement instead.
                lastVal = Evaluate(data, metrics, step, Elapsed, _experts.Size > 1 ? CancellationToken.None : ct) ?? lastVal;
            }
            if (step % cfg.SaveSteps == 0 || step == stopAt) lastCheckpoint = SaveCheckpoint();
        }
        return new TrainResult(_step, lastCheckpoint, lastVal, Interrupted: _step < cfg.MaxSteps);
    }

    /// <summary>Under expert parallelism the step's record also says what rank 0's exchanges sent to the other ranks of its group.</summary>
    private static Dictionary<string, object> StepRecord(ExpertParallel experts, long dispatchBefore, long combineBefore, Dictionary<string, object> record)
    {
        if (experts.Size == 1) return record;
        record["ep_dispatch_bytes"] = experts.Traffic.DispatchBytes - dispatchBefore;
        record["ep_combine_bytes"] = experts.Traffic.CombineBytes - combineBefore;
        return record;
    }

    /// <summary>
    /// Adds the sequence-wise balance loss (bias mode, α = seq_aux_alpha) or the batch-wise baseline (aux_loss mode),
    /// each weighted by <paramref name="weight"/> (1/accumulation steps: these are means per micro-batch). A "sequence"
    /// is a row of the micro-batch, so with sample_packing the examples packed into one row share one term.
    /// </summary>
    private (Tensor Total, float Aux) AddBalanceLoss(Tensor total, SequenceBatch geometry, float weight)
    {
        float alpha = _cfg.Balancing switch { "bias" => _cfg.SeqAuxAlpha, "aux_loss" => _cfg.AuxLossAlpha, _ => 0f };
        if (alpha <= 0) return (total, 0);
        int groupRows = _cfg.Balancing == "bias" ? geometry.SeqLen : geometry.Tokens;
        var terms = new List<Tensor> { total };
        foreach (var gate in _balancer.Gates)
        {
            // Scores that need no gradient (a frozen gate over frozen layers) were not kept for a backward, and a balance
            // loss on them would train nothing.
            if (gate.LastScores is not { RequiresGrad: true }) continue;
            int rows = gate.LastScores.Shape[0];
            if (rows != geometry.Tokens) continue; // MTP gates see the same rows; anything else is skipped
            terms.Add(Functional.BalanceLoss(gate.LastScores, gate.LastIndices, gate.TopK, groupRows, alpha));
        }
        if (terms.Count == 1) return (total, 0);
        float aux = terms.Skip(1).Sum(x => x.Data[0]) * weight;
        var weights = Enumerable.Repeat(weight, terms.Count).ToArray();
        weights[0] = 1f;
        return (Functional.WeightedSum(terms.ToArray(), weights), aux);
    }

    /// <summary>Training time of the whole run, across resumes.</summary>
    private double Elapsed => _elapsedBefore + _clock.Elapsed.TotalSeconds;

    /// <summary>How many weights the run changes (trained parameters, and buffers such as the routing biases) are NaN or
    /// infinite. Frozen weights are what was loaded, and a frozen base may hold no fp32 values at all.</summary>
    private long NonFiniteWeights()
    {
        long bad = 0;
        foreach (var t in _model.NamedParameters().Where(p => p.Parameter.RequiresGrad).Select(p => (Tensor)p.Parameter).Concat(_model.NamedBuffers().Select(b => b.Buffer)))
            if (!System.Numerics.Tensors.TensorPrimitives.IsFiniteAll<float>(t.Span))
                foreach (float v in t.Span) bad += float.IsFinite(v) ? 0 : 1;
        return bad;
    }

    /// <summary>
    /// The fine-tuning data: the <c>datasets:</c> as examples (SftDatasets), evaluated on <c>test_datasets:</c> or, without
    /// them, on <c>val_set_size</c> of the examples held out (a seeded choice of whole examples).
    /// </summary>
    private FineTuning.SftBatches PrepareFineTuning(CancellationToken ct)
    {
        var sft = FineTuning.SftTokenizer.FromConfig(_cfg);
        if (sft.Tokenizer.VocabSize > _model.Config.VocabSize)
            throw new DeepSeekSharpException($"{sft.Source}: the tokenizer's {sft.Tokenizer.VocabSize} ids do not fit the model's vocab_size {_model.Config.VocabSize}");
        var train = FineTuning.SftDatasets.Load(_cfg, sft, _log, ct);
        foreach (var d in train.Datasets)
            _log($"{d.Path} ({d.Type}): {d.Kept:N0} of {d.Read:N0} examples, {d.TrainedTokens:N0} of {d.Tokens:N0} tokens trained"
                + (d.DroppedTooLong + d.DroppedUntrained + d.Truncated > 0 ? $"; {d.DroppedTooLong:N0} dropped as longer than sequence_len, {d.DroppedUntrained:N0} without a trained token, {d.Truncated:N0} truncated" : ""));
        var examples = train.Examples.Select(e => e.Example).ToList();
        // The checkpoints carry the chat template the chats were trained in (as Axolotl saves it), so serving and
        // `dss eval` render prompts the same way with chat_template: tokenizer_default.
        if (_cfg.Datasets.Any(d => d.Type is "chat_template" or "gsm8k") && _tokenizerConfigJson is not null
            && (_cfg.ChatTemplate switch { "deepseek_v3" => FineTuning.BuiltInChatTemplates.DeepSeekV3, "jinja" => _cfg.ChatTemplateJinja, _ => null }) is { } template)
        {
            var config = System.Text.Json.Nodes.JsonNode.Parse(_tokenizerConfigJson)!.AsObject();
            config["chat_template"] = template;
            _tokenizerConfigJson = config.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        }
        if (_cfg.EvalGsm8kProblems > 0)
        {
            var source = _cfg.TestDatasets.FirstOrDefault(d => d.Type == "gsm8k")
                ?? throw new DeepSeekSharpException("eval_gsm8k_problems: give a test_datasets entry of type gsm8k to answer");
            var chat = FineTuning.ChatTemplate.Resolve(source.ChatTemplate ?? _cfg.ChatTemplate, _cfg.ChatTemplateJinja, sft);
            _gsm8k = (Evaluation.Gsm8kEvaluator.Read(source.Path, _cfg.EvalGsm8kProblems), sft.Tokenizer, chat);
        }
        List<FineTuning.TokenizedExample> validation;
        if (_cfg.TestDatasets.Count > 0)
            validation = FineTuning.SftDatasets.Load(_cfg, sft, _log, ct, _cfg.TestDatasets).Examples.Select(e => e.Example).ToList();
        else
        {
            int held = (int)(examples.Count * _cfg.ValSetSize);
            var order = Enumerable.Range(0, examples.Count).ToArray();
            new Random(_cfg.Seed).Shuffle(order);
            var heldOut = order.Take(held).ToHashSet();
            validation = [.. heldOut.Order().Select(i => examples[i])];
            examples = [.. Enumerable.Range(0, examples.Count).Where(i => !heldOut.Contains(i)).Select(i => examples[i])];
            if (examples.Count == 0) throw new DeepSeekSharpException($"val_set_size {_cfg.ValSetSize} leaves no training example");
        }
        return new FineTuning.SftBatches(examples, validation, _cfg.SequenceLen, _cfg.MicroBatchSize, _cfg.SamplePacking, _cfg.Seed,
            sft.Tokenizer.EosId ?? 0, sft.Tokenizer);
    }

    /// <summary>Validation and a sample; null (nothing recorded) when <paramref name="ct"/> stops it part-way.</summary>
    private float? Evaluate(ITrainingBatches data, MetricsLog? metrics, long step, double elapsed, CancellationToken ct)
    {
        int batches = Math.Min(data.ValidationBatches, _cfg.EvalBatches);
        if (batches == 0) return float.NaN;
        double lossSum = 0;
        long count = 0;
        // Validation runs the model without its MTP blocks: only the model's MoE layers route (the MTP gates still
        // hold the last training batch's counts, which must not be counted here).
        var gates = _balancer.ModelGates;
        var counts = gates.Select(g => new long[g.Experts]).ToArray();
        using (GradMode.NoGrad())
        {
            for (int i = 0; i < batches; i++)
            {
                if (ct.IsCancellationRequested) return null;
                var vb = data.Validation(i);
                using var batchTensors = TensorScope.Begin();
                var (hidden, _) = _model.ForwardHidden(vb.Tokens, vb.Geometry);
                // The loss per trained token over the whole validation set: each batch's sum of token losses.
                var targets = DeepSeekModel.Targets(vb.Labels, vb.Geometry, 0);
                long n = targets.Count(t => t >= 0);
                if (n == 0) continue;
                lossSum += (double)LanguageModelLoss.HeadLoss(_model.LmHead, hidden, targets).Data[0] * n;
                count += n;
                for (int g = 0; g < counts.Length; g++)
                {
                    var c = gates[g].LastExpertCounts;
                    for (int e = 0; e < c.Length && e < counts[g].Length; e++) counts[g][e] += c[e];
                }
            }
        }
        if (count == 0) return float.NaN;
        float valLoss = (float)(lossSum / count);
        Evaluation.Gsm8kResult? gsm8k = null;
        if (_gsm8k is { } problems)
        {
            using (GradMode.NoGrad()) gsm8k = Evaluation.Gsm8kEvaluator.Evaluate(_model, problems.Tokenizer, problems.Template, problems.Items, ct: ct);
            if (ct.IsCancellationRequested) return null;
            _log($"step {step}: GSM8K exact match {gsm8k.Accuracy:P2} ({gsm8k.Correct} of {gsm8k.Examples})");
        }
        float bpb = (float)(valLoss / Math.Log(2) / data.ValidationBytesPerToken);
        var layerVio = counts.Select(c => BiasBalancer.MaxVio(c)).ToArray();
        string sample = Sample(ct);
        if (ct.IsCancellationRequested) return null;
        _log($"step {step}: val_loss {valLoss:F4} ({bpb:F3} bits/byte), val MaxVio {(layerVio.Length > 0 ? layerVio.Average() : 0):F3}");
        _log($"sample: {PrintableText.Escape(sample).ReplaceLineEndings("⏎")}");
        var record = new Dictionary<string, object>
        {
            ["val_loss"] = valLoss, ["val_bpb"] = bpb, ["val_max_vio"] = layerVio.Length > 0 ? layerVio.Average() : 0f,
            ["val_max_vio_per_layer"] = layerVio, ["expert_load_per_layer"] = counts, ["sample"] = sample,
            ["elapsed_s"] = Math.Round(elapsed, 2),
        };
        if (gsm8k is not null) record["gsm8k_accuracy"] = (float)gsm8k.Accuracy;
        metrics?.Write("eval", step, record);
        return valLoss;
    }

    /// <summary>Temperature-0.8 sampling from <c>sample_prompt</c> with a fixed seed (full recompute per token).</summary>
    private string Sample(CancellationToken ct)
    {
        if (_cfg.SampleTokens <= 0) return "";
        var rng = new Random(_cfg.Seed);
        var ids = _tokenizer.Encode(_cfg.SamplePrompt).ToList();
        if (ids.Count == 0 && _tokenizer.EosId is int eos) ids.Add(eos);
        int start = ids.Count;
        using (GradMode.NoGrad())
        {
            for (int i = 0; i < _cfg.SampleTokens && !ct.IsCancellationRequested; i++)
            {
                var context = ids.Skip(Math.Max(0, ids.Count - _cfg.SequenceLen)).ToArray();
                using var tokenTensors = TensorScope.Begin();
                var output = _model.Forward(context, SequenceBatch.Training(1, context.Length));
                int v = _model.Config.VocabSize;
                var last = output.Logits.Span.Slice((context.Length - 1) * v, v);
                ids.Add(SampleToken(last, 0.8f, rng, _tokenizer.VocabSize));
            }
        }
        return _tokenizer.Decode(ids.Skip(start).ToArray());
    }

    private static int SampleToken(ReadOnlySpan<float> logits, float temperature, Random rng, int usable)
    {
        float max = float.NegativeInfinity;
        for (int i = 0; i < usable; i++) max = Math.Max(max, logits[i]);
        var p = new double[usable];
        double sum = 0;
        for (int i = 0; i < usable; i++) sum += p[i] = Math.Exp((logits[i] - max) / temperature);
        double u = rng.NextDouble() * sum;
        for (int i = 0; i < usable; i++) if ((u -= p[i]) <= 0) return i;
        return usable - 1;
    }

    /// <summary>Every rank calls it (ZeRO-1 gathers the moments); rank 0 writes the folder, the others return null.</summary>
    private string? SaveCheckpoint()
    {
        var state = new TrainerState(_step, _optimizer.Step, _tokensSeen, Math.Round(Elapsed, 2));
        var moments = _optimizer.State().ToList();
        _experts.GatherWeights();
        if (!_parallel.IsRoot)
        {
            _savedStep = _step;
            return null;
        }
        string dir = CheckpointStore.Save(_cfg.OutputDir, state, _model, _configJson, moments, _tokenizerFile, _tokenizerConfigJson, _cfg.SaveTotalLimit,
            _cfg.Lora, _cfg.BaseModel, _esft is null ? null : new(_esft, AsAdapter: _cfg.Adapter == "esft"));
        _savedStep = _step;
        _log($"saved {dir}");
        return dir;
    }

    private string SummaryLine()
    {
        var count = ParameterCount.Of(_model);
        return $"{ModelSummary.Human(count.Total)} params ({ModelSummary.Human(count.ActivatedPerToken)} active), MTP depth {MtpDepth}, balancing {_cfg.Balancing}";
    }
}
