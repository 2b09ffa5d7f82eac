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
    private readonly AdamW _optimizer;
    private readonly BiasBalancer _balancer;
    private readonly string _configJson;
    private readonly string? _tokenizerFile;
    private readonly string? _tokenizerConfigJson;
    private readonly string? _resumedFrom;
    private readonly bool _resumedInPlace;
    private readonly Stopwatch _clock = new();
    private readonly double _elapsedBefore;
    private long _step;
    private long _savedStep;
    private long _tokensSeen;

    private Trainer(TrainConfig cfg, TrainOptions opts, bool resumeInPlace, Action<string> log, CancellationToken ct)
    {
        _cfg = cfg;
        _opts = opts;
        _log = log;
        (_tokenizer, _tokenizerFile) = TokenizerFactory.Create(cfg, log, ct);
        _tokenizerConfigJson = _tokenizerFile is null ? null : ModelTokenizer.ConfigJsonFor(_tokenizerFile, _tokenizer as HfTokenizer ?? HfTokenizer.Load(_tokenizerFile));
        string? resumeFrom = opts.ResumeDir is null ? null : CheckpointStore.Latest(opts.ResumeDir)
            ?? throw new DeepSeekSharpException($"{opts.ResumeDir}: no checkpoint-<step> folder to resume from");
        (_model, _configJson) = resumeFrom is not null ? LoadForResume(resumeFrom) : BuildModel();
        // The checkpoints' config and generation_config carry the special ids of the tokenizer the run uses.
        _configJson = WithSpecialTokens(_configJson, _tokenizer);
        ct.ThrowIfCancellationRequested();
        if (_model.Config.VocabSize < _tokenizer.VocabSize)
            throw new DeepSeekSharpException($"the model's vocab_size {_model.Config.VocabSize} is smaller than the tokenizer's {_tokenizer.VocabSize}");
        // Gradients and AdamW's two moments come on top of the weights: refuse now rather than at the first step.
        int momentBytes = cfg.MomentPrecision == MomentPrecision.Bf16 ? 2 : 4;
        ModelFootprint.EnsureFits(_model.Config, ModelFootprint.Bytes(ModelFootprint.Of(_model.Config).Elements, 2 * sizeof(float) + 2 * momentBytes),
            "training it (weights, gradients and AdamW moments)");
        _optimizer = new AdamW(_model.NamedParameters())
        {
            Beta1 = cfg.AdamBeta1, Beta2 = cfg.AdamBeta2, Eps = cfg.AdamEpsilon, WeightDecay = cfg.WeightDecay,
            Moments = cfg.MomentPrecision,
        };
        _balancer = new BiasBalancer(_model);
        DeepSeekSharp.Fp8.Fp8Training.Apply(_model, cfg.Precision, cfg.Fp8SwigluCache, cfg.Fp8E5M6OProj);
        _model.RecomputeNorms(cfg.RecomputeNorms);
        _model.RecomputeMlaUpProjections(cfg.RecomputeMlaUp);
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
        opts.Validate();
        using var folder = RunFolder.Acquire(cfg.OutputDir);
        bool resumeInPlace = opts.ResumeDir is not null && IO.AtomicFolder.Canonical(opts.ResumeDir) == IO.AtomicFolder.Canonical(cfg.OutputDir);
        if (resumeInPlace && opts.Overwrite)
            throw new DeepSeekSharpException($"{cfg.OutputDir}: --overwrite starts a new run and --resume continues this one; give one of them");
        if (!resumeInPlace)
            folder.StartFresh(opts.Overwrite, cfg.Datasets.Select(d => d.Path).Concat([cfg.BaseModel, cfg.ModelConfig, cfg.Tokenizer, opts.ResumeDir]));
        var trainer = new Trainer(cfg, opts, resumeInPlace, log, ct);
        try { return trainer.Loop(progress, ct); }
        finally { Reporting.RunReport.WriteAfterTraining(cfg.OutputDir, log); }
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
        var model = ModelCheckpoint.Load(checkpoint);
        return (model, File.ReadAllText(Path.Combine(checkpoint, "config.json")));
    }

    private (DeepSeekModel, string) BuildModel()
    {
        if (_cfg.BaseModel is not null)
        {
            _log($"loading base model {_cfg.BaseModel}");
            return (ModelCheckpoint.Load(_cfg.BaseModel), File.ReadAllText(Path.Combine(_cfg.BaseModel, "config.json")));
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
        using var data = TrainingData.Prepare(cfg, _tokenizer, _tokenizer is ByteTokenizer ? "byte" : _tokenizerFile ?? "byte", _log, ct);
        using var metrics = new MetricsLog(cfg.OutputDir, _resumedInPlace ? _step : null);
        IO.AtomicFile.WriteAllText(Path.Combine(cfg.OutputDir, TrainConfig.RunFileName), cfg.ToJson());
        var schedule = new LrSchedule(cfg.LrScheduler, cfg.LearningRate, cfg.WarmupSteps, cfg.MaxSteps, cfg.MinLrRatio);
        int b = cfg.MicroBatchSize, t = cfg.SequenceLen, accum = cfg.GradientAccumulationSteps;
        long stopAt = Math.Min(cfg.MaxSteps, _opts.StopAtStep ?? long.MaxValue);
        var batch = SequenceBatch.Training(b, t);
        var tokens = new int[b * t];
        var parameters = _model.NamedParameters().Select(p => p.Parameter).ToList();
        string? lastCheckpoint = _resumedFrom;
        float? lastVal = null;
        _clock.Start();
        _log($"training {SummaryLine()} for steps {_step + 1}..{stopAt} of {cfg.MaxSteps}");

        while (_step < stopAt)
        {
            if (ct.IsCancellationRequested)
            {
                // A step is saved once: a stop right after a periodic save keeps that checkpoint as it is.
                if (_savedStep < _step) lastCheckpoint = SaveCheckpoint();
                return new TrainResult(_step, lastCheckpoint, lastVal, Interrupted: true);
            }
            long step = _step + 1;
            var stepClock = Stopwatch.StartNew();
            _model.ZeroGrad();
            float lambda = step <= cfg.MtpLambdaSwitch * cfg.MaxSteps ? cfg.MtpLambda : cfg.MtpLambdaLate;
            double lossSum = 0, mainSum = 0, mtpSum = 0, auxSum = 0;
            for (int micro = 0; micro < accum; micro++)
            {
                data.Batches.TrainBatch(_step * accum + micro, b, tokens);
                // The micro-batch's tensors live until its backward ran; whatever is left then goes back to the pool.
                using var microBatchTensors = TensorScope.Begin();
                var loss = LanguageModelLoss.Compute(_model, tokens, batch, lambda, MtpDepth);
                var (total, aux) = AddBalanceLoss(loss.Total, b, t);
                Tensor scaled = accum == 1 ? total : Functional.WeightedSum([total], [1f / accum]);
                Backprop.Backward(scaled, freeActivations: true);
                _balancer.Accumulate();
                lossSum += total.Data[0];
                mainSum += loss.MainLoss;
                mtpSum += loss.MtpLosses.Length > 0 ? loss.MtpLosses.Average() : 0;
                auxSum += aux;
            }
            float gradNorm = GradClip.ClipGlobalNorm(parameters, cfg.MaxGradNorm);
            float lr = schedule.At(step);
            _optimizer.Update(lr);
            var balance = _balancer.Update(cfg.Balancing == "bias" ? cfg.BiasUpdateSpeed : 0f);
            _step = step;
            _tokensSeen += (long)b * t * accum;
            double tps = (double)b * t * accum / stepClock.Elapsed.TotalSeconds;
            float mainLoss = (float)(mainSum / accum);
            // The update may have made weights non-finite while this step's loss (computed before it) was fine.
            long badWeights = NonFiniteWeights();
            bool diverged = !float.IsFinite(mainLoss) || badWeights > 0;
            progress?.Report(new TrainProgress(step, stopAt, mainLoss, lr, tps));

            if (diverged || step % cfg.LoggingSteps == 0 || step == stopAt)
                metrics.Write("train", step, new Dictionary<string, object>
                {
                    ["tokens"] = _tokensSeen, ["loss"] = mainLoss, ["total_loss"] = (float)(lossSum / accum),
                    ["mtp_loss"] = (float)(mtpSum / accum), ["balance_loss"] = (float)(auxSum / accum), ["lr"] = lr,
                    ["grad_norm"] = gradNorm, ["tokens_per_s"] = Math.Round(tps, 1),
                    ["max_vio"] = balance.ModelMean, ["elapsed_s"] = Math.Round(Elapsed, 2),
                    ["max_vio_per_layer"] = balance.PerGate,
                });
            if (diverged)
                throw new DeepSeekSharpException($"{cfg.OutputDir}: step {step} diverged ("
                    + (badWeights > 0 ? $"{badWeights:N0} weights are NaN/Inf after its update" : $"loss is {mainLoss}")
                    + $"); nothing of it was saved, the last good checkpoint is {lastCheckpoint ?? "none (no save yet)"}; lower learning_rate");
            if (step % cfg.EvalSteps == 0 || step == cfg.MaxSteps)
            {
                lastVal = Evaluate(data, metrics, step, Elapsed, ct) ?? lastVal;
            }
            if (step % cfg.SaveSteps == 0 || step == stopAt) lastCheckpoint = SaveCheckpoint();
        }
        return new TrainResult(_step, lastCheckpoint, lastVal, Interrupted: _step < cfg.MaxSteps);
    }

    /// <summary>Adds the sequence-wise balance loss (bias mode, α = seq_aux_alpha) or the batch-wise baseline (aux_loss mode).</summary>
    private (Tensor Total, float Aux) AddBalanceLoss(Tensor total, int batch, int seqLen)
    {
        float alpha = _cfg.Balancing switch { "bias" => _cfg.SeqAuxAlpha, "aux_loss" => _cfg.AuxLossAlpha, _ => 0f };
        if (alpha <= 0) return (total, 0);
        int groupRows = _cfg.Balancing == "bias" ? seqLen : batch * seqLen;
        var terms = new List<Tensor> { total };
        foreach (var gate in _balancer.Gates)
        {
            if (gate.LastScores is null) continue;
            int rows = gate.LastScores.Shape[0];
            if (rows != batch * seqLen) continue; // MTP gates see the same rows; anything else is skipped
            terms.Add(Functional.BalanceLoss(gate.LastScores, gate.LastIndices, gate.TopK, groupRows, alpha));
        }
        if (terms.Count == 1) return (total, 0);
        float aux = terms.Skip(1).Sum(x => x.Data[0]);
        return (Functional.WeightedSum(terms.ToArray(), Enumerable.Repeat(1f, terms.Count).ToArray()), aux);
    }

    /// <summary>Training time of the whole run, across resumes.</summary>
    private double Elapsed => _elapsedBefore + _clock.Elapsed.TotalSeconds;

    /// <summary>How many weights (parameters and buffers such as the routing biases) are NaN or infinite.</summary>
    private long NonFiniteWeights()
    {
        long bad = 0;
        foreach (var t in _model.NamedParameters().Select(p => (Tensor)p.Parameter).Concat(_model.NamedBuffers().Select(b => b.Buffer)))
            if (!System.Numerics.Tensors.TensorPrimitives.IsFiniteAll<float>(t.Span))
                foreach (float v in t.Span) bad += float.IsFinite(v) ? 0 : 1;
        return bad;
    }

    /// <summary>Validation and a sample; null (nothing recorded) when <paramref name="ct"/> stops it part-way.</summary>
    private float? Evaluate(TrainingData data, MetricsLog metrics, long step, double elapsed, CancellationToken ct)
    {
        int b = _cfg.MicroBatchSize, t = _cfg.SequenceLen;
        int windows = Math.Min(data.Batches.ValidationWindows, _cfg.EvalBatches * b);
        if (windows == 0) return float.NaN;
        double lossSum = 0;
        int count = 0;
        // Validation runs the model without its MTP blocks: only the model's MoE layers route (the MTP gates still
        // hold the last training batch's counts, which must not be counted here).
        var gates = _balancer.ModelGates;
        var counts = gates.Select(g => new long[g.Experts]).ToArray();
        using (GradMode.NoGrad())
        {
            for (int start = 0; start < windows; start += b)
            {
                if (ct.IsCancellationRequested) return null;
                int n = Math.Min(b, windows - start);
                var ids = new int[n * t];
                for (int i = 0; i < n; i++) data.Batches.ValidationWindow(start + i, ids.AsSpan(i * t, t));
                var batch = SequenceBatch.Training(n, t);
                using var batchTensors = TensorScope.Begin();
                var (hidden, _) = _model.ForwardHidden(ids, batch);
                lossSum += LanguageModelLoss.HeadLoss(_model.LmHead, hidden, DeepSeekModel.Targets(ids, batch, 0)).Data[0] * n;
                count += n;
                for (int g = 0; g < counts.Length; g++)
                {
                    var c = gates[g].LastExpertCounts;
                    for (int e = 0; e < c.Length && e < counts[g].Length; e++) counts[g][e] += c[e];
                }
            }
        }
        float valLoss = (float)(lossSum / count);
        float bpb = (float)(valLoss / Math.Log(2) / data.ValidationBytesPerToken);
        var layerVio = counts.Select(c => BiasBalancer.MaxVio(c)).ToArray();
        string sample = Sample(ct);
        if (ct.IsCancellationRequested) return null;
        _log($"step {step}: val_loss {valLoss:F4} ({bpb:F3} bits/byte), val MaxVio {(layerVio.Length > 0 ? layerVio.Average() : 0):F3}");
        _log($"sample: {PrintableText.Escape(sample).ReplaceLineEndings("⏎")}");
        metrics.Write("eval", step, new Dictionary<string, object>
        {
            ["val_loss"] = valLoss, ["val_bpb"] = bpb, ["val_max_vio"] = layerVio.Length > 0 ? layerVio.Average() : 0f,
            ["val_max_vio_per_layer"] = layerVio, ["expert_load_per_layer"] = counts, ["sample"] = sample,
            ["elapsed_s"] = Math.Round(elapsed, 2),
        });
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

    private string SaveCheckpoint()
    {
        var state = new TrainerState(_step, _optimizer.Step, _tokensSeen, Math.Round(Elapsed, 2));
        string dir = CheckpointStore.Save(_cfg.OutputDir, state, _model, _configJson, _optimizer, _tokenizerFile, _tokenizerConfigJson, _cfg.SaveTotalLimit);
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
