using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Optim;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss bench gemm|train</c>: kernel and whole-step throughput on this machine.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var cmd = new Command("bench", "Measure GEMM GFLOP/s or training/forward tokens per second");
        cmd.Subcommands.Add(Gemm());
        cmd.Subcommands.Add(Train());
        cmd.Subcommands.Add(Decode());
        cmd.Subcommands.Add(BenchRolloutCommand.Create());
        return cmd;
    }

    private static Command Gemm()
    {
        var m = new Option<int>("--m") { Description = "rows of A and C", Required = true };
        var n = new Option<int>("--n") { Description = "columns of B and C", Required = true };
        var k = new Option<int>("--k") { Description = "inner dimension", Required = true };
        var threads = new Option<int>("--threads") { Description = "worker threads (default: all cores)", DefaultValueFactory = _ => Environment.ProcessorCount };
        var iterations = new Option<int>("--iterations") { Description = "timed repetitions (median reported)", DefaultValueFactory = _ => 20 };
        var transA = new Option<bool>("--trans-a") { Description = "A is stored transposed, [k,m] (as for weight gradients dW = dYᵀ·X)" };
        var transB = new Option<bool>("--trans-b") { Description = "B is stored transposed, [n,k] (as for a Linear's forward X·Wᵀ)" };
        var json = new Option<bool>("--json") { Description = "print one JSON line" };
        var cmd = new Command("gemm", "SGEMM C[m,n] = op(A)[m,k]·op(B)[k,n] GFLOP/s (median of repetitions after warm-up)") { m, n, k, transA, transB, threads, iterations, json };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int mm = r.GetValue(m), nn = r.GetValue(n), kk = r.GetValue(k), t = r.GetValue(threads), it = r.GetValue(iterations);
            if (mm <= 0 || nn <= 0 || kk <= 0 || t <= 0 || it <= 0) throw new DeepSeekSharpException("--m, --n, --k, --threads and --iterations must be positive");
            bool ta = r.GetValue(transA), tb = r.GetValue(transB);
            var res = TimeGemm(mm, nn, kk, ta, tb, t, warmup: 3, iterations: it);
            string layout = (ta ? "T" : "N") + (tb ? "T" : "N");
            Console.WriteLine(r.GetValue(json)
                ? JsonSerializer.Serialize(new { m = mm, n = nn, k = kk, trans_a = ta, trans_b = tb, threads = t, seconds_median = res.MedianSeconds, gflops = res.GFlops })
                : string.Create(CultureInfo.InvariantCulture, $"sgemm {mm}x{nn}x{kk} {layout}, {t} thread(s): {res.GFlops:F1} GFLOP/s (median {res.MedianSeconds * 1e3:F3} ms)"));
            return 0;
        }));
        return cmd;
    }

    private static (double MedianSeconds, double GFlops) TimeGemm(int m, int n, int k, bool transA, bool transB, int threads, int warmup, int iterations)
    {
        var backend = new CpuBackend(threads);
        var rng = new Random(1);
        var a = new float[(long)m * k]; var b = new float[(long)k * n]; var c = new float[(long)m * n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;
        for (int i = 0; i < b.Length; i++) b[i] = (float)rng.NextDouble() - 0.5f;
        var times = new List<double>();
        for (int i = 0; i < warmup + iterations; i++)
        {
            var sw = Stopwatch.StartNew();
            backend.Gemm(transA, transB, m, n, k, 1f, a, transA ? m : k, b, transB ? k : n, 0f, c, n);
            if (i >= warmup) times.Add(sw.Elapsed.TotalSeconds);
        }
        double median = Median(times);
        return (median, 2.0 * m * n * k / median / 1e9);
    }

    /// <summary>The median; for an even count the mean of the middle two (as the PyTorch peer script reports it).</summary>
    internal static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }

    private static Command Decode()
    {
        var model = new Option<string>("--model") { Description = "folder with at least config.json (random init when it has no weights)", Required = true };
        var context = new Option<int>("--context") { Description = "prompt tokens before decoding starts", DefaultValueFactory = _ => 512 };
        var tokens = new Option<int>("--tokens") { Description = "tokens to decode (timed)", DefaultValueFactory = _ => 32 };
        var recompute = new Option<int>("--recompute-steps") { Description = "also time this many full-sequence recomputations per token (0 = skip)", DefaultValueFactory = _ => 3 };
        var json = new Option<bool>("--json") { Description = "print one JSON line" };
        var weights = CliCommon.WeightsOption();
        var cmd = new Command("decode", "Batch-1 decoding speed with the MLA latent cache vs recomputing the whole sequence per token") { model, context, tokens, recompute, weights, json };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string dir = r.GetValue(model)!;
            int ctxLen = r.GetValue(context), n = r.GetValue(tokens), rec = r.GetValue(recompute);
            DeepSeekModel m;
            string storage = r.GetValue(weights)!;
            if (ModelCheckpoint.HasWeights(dir)) m = CliCommon.LoadForInference(dir, storage);
            else
            {
                m = new DeepSeekModel(DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(dir)), materialize: true);
                ModelInit.InitializeRandom(m, 0);
                if (storage != "fp32") DeepSeekSharp.Inference.InferenceWeights.Compress(m, storage == "bf16" ? DeepSeekSharp.Tensors.WeightStorage.Bf16 : DeepSeekSharp.Tensors.WeightStorage.Fp8Block);
            }
            if (ctxLen < 1 || n < 1 || ctxLen + n > m.Config.MaxPositionEmbeddings) throw new DeepSeekSharpException("--context + --tokens must fit the model's max_position_embeddings");
            var rng = new Random(2);
            var prompt = Enumerable.Range(0, ctxLen).Select(_ => rng.Next(m.Config.VocabSize)).ToArray();
            var decoder = new DeepSeekSharp.Inference.CachedDecoder(m);
            var cache = decoder.NewCache();
            var sw = Stopwatch.StartNew();
            var (logits, _) = decoder.Forward([(prompt, cache)]);
            double prefill = sw.Elapsed.TotalSeconds;
            int v = m.Config.VocabSize;
            int next = DeepSeekSharp.Inference.Sampler.ArgMax(logits.Span.Slice((ctxLen - 1) * v, v));
            var times = new List<double>();
            var all = prompt.ToList();
            for (int i = 0; i < n; i++)
            {
                all.Add(next);
                sw.Restart();
                (logits, _) = decoder.Forward([(new[] { next }, cache)]);
                times.Add(sw.Elapsed.TotalSeconds);
                next = DeepSeekSharp.Inference.Sampler.ArgMax(logits.Span);
            }
            double cached = Median(times);
            double recomputeS = 0;
            if (rec > 0)
            {
                var rt = new List<double>();
                using (GradMode.NoGrad())
                    for (int i = 0; i < rec; i++)
                    {
                        sw.Restart();
                        m.Forward(all.ToArray(), SequenceBatch.Training(1, all.Count));
                        rt.Add(sw.Elapsed.TotalSeconds);
                    }
                recomputeS = Median(rt);
            }
            long peakMb = Process.GetCurrentProcess().PeakWorkingSet64 / (1024 * 1024);
            var res = new
            {
                context = ctxLen, decode_tokens_per_s = Math.Round(1 / cached, 2), decode_ms_per_token = Math.Round(cached * 1e3, 3),
                prefill_tokens_per_s = Math.Round(ctxLen / prefill, 1), recompute_ms_per_token = Math.Round(recomputeS * 1e3, 2),
                speedup_vs_recompute = recomputeS > 0 ? Math.Round(recomputeS / cached, 1) : 0,
                cache_bytes_per_token = cache.BytesPerToken, mha_cache_bytes_per_token = decoder.MhaBytesPerToken, peak_rss_mb = peakMb,
                weights = storage, weight_mb = Math.Round(DeepSeekSharp.Inference.InferenceWeights.WeightBytes(m) / 1048576.0, 1),
            };
            Console.WriteLine(r.GetValue(json) ? JsonSerializer.Serialize(res)
                : string.Create(CultureInfo.InvariantCulture, $"decode at {ctxLen} context: {res.decode_tokens_per_s} tokens/s ({res.decode_ms_per_token} ms/token), prefill {res.prefill_tokens_per_s} tokens/s; full recompute {res.recompute_ms_per_token} ms/token ({res.speedup_vs_recompute}x slower); cache {cache.BytesPerToken} B/token vs {decoder.MhaBytesPerToken} B for MHA"));
            return 0;
        }));
        return cmd;
    }

    private static Command Train()
    {
        var model = new Option<string>("--model") { Description = "folder with at least config.json (random init when it has no weights)", Required = true };
        var batch = new Option<int>("--batch") { Description = "sequences per step", Required = true };
        var seq = new Option<int>("--seq") { Description = "tokens per sequence", Required = true };
        var steps = new Option<int>("--steps") { Description = "timed steps", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "untimed warm-up steps (the first steps run slower while the storage pool fills)", DefaultValueFactory = _ => 3 };
        var threads = new Option<int>("--threads") { Description = "worker threads (sets DSS_THREADS for this run)", DefaultValueFactory = _ => 0 };
        var mode = new Option<string>("--mode") { Description = "train (forward, backward, AdamW) or fwd (forward only)", DefaultValueFactory = _ => "train" };
        mode.AcceptOnlyFromAmong("train", "fwd");
        var json = new Option<bool>("--json") { Description = "last line is {tokens_per_s, step_s_median, peak_rss_mb, gflops, gc_pause_share, activation_mb}" };
        var precision = new Option<string>("--precision") { Description = "fp32, bf16 or fp8 (FP8 GEMMs in attention/MLP Linears)", DefaultValueFactory = _ => "fp32" };
        precision.AcceptOnlyFromAmong(DeepSeekSharp.Fp8.Fp8Training.Precisions);
        var recompute = new Option<bool>("--recompute-norms") { Description = "Recompute RMSNorm outputs in the backward instead of keeping them (config key recompute_norms)" };
        var recomputeUp = new Option<bool>("--recompute-mla-up") { Description = "Recompute MLA's up-projections (q_b with RoPE, kv_b) in the backward (config key recompute_mla_up)" };
        var loraR = new Option<int>("--lora-r") { Description = "train LoRA adapters of this rank on a frozen base instead of every weight (0: full training)", DefaultValueFactory = _ => 0 };
        var loraTargets = new Option<string>("--lora-targets") { Description = "with --lora-r: comma-separated lora_target_modules entries",
            DefaultValueFactory = _ => "q_a_proj,q_b_proj,q_proj,kv_a_proj_with_mqa,kv_b_proj,o_proj,mlp.experts" };
        var basePrecision = new Option<string>("--base-precision") { Description = "with --lora-r: keep the frozen base as fp32, bf16 or fp8 (config key base_model_precision)", DefaultValueFactory = _ => "fp32" };
        basePrecision.AcceptOnlyFromAmong("fp32", "bf16", "fp8");
        var perExpert = new Option<bool>("--per-expert-modules") { Description = "run the routed experts one module each instead of as grouped GEMMs (for comparison)" };
        var device = CudaCommand.DeviceOption();
        var cmd = new Command("train", "Time training steps (or forward passes) on random tokens")
        {
            model, batch, seq, steps, warmup, threads, mode, precision, recompute, recomputeUp, loraR, loraTargets, basePrecision, perExpert, device, json,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string dir = r.GetValue(model)!;
            int b = r.GetValue(batch), t = r.GetValue(seq), n = r.GetValue(steps), w = r.GetValue(warmup);
            if (b <= 0 || t <= 1 || n <= 0 || w < 0) throw new DeepSeekSharpException("--batch, --steps must be positive, --seq > 1, --warmup ≥ 0");
            if (r.GetValue(threads) > 0) Environment.SetEnvironmentVariable("DSS_THREADS", r.GetValue(threads).ToString(CultureInfo.InvariantCulture));
            using var onDevice = CudaCommand.UseDevice(r.GetValue(device)!);
            DeepSeekModel m;
            if (ModelCheckpoint.HasWeights(dir)) m = ModelCheckpoint.Load(dir);
            else
            {
                m = new DeepSeekModel(DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(dir)), materialize: true);
                ModelInit.InitializeRandom(m, 0);
            }
            bool train = r.GetValue(mode) == "train";
            ApplyLora(m, r.GetValue(loraR), r.GetValue(loraTargets)!, r.GetValue(basePrecision)!);
            foreach (var moe in m.NamedModules().Select(x => x.Module).OfType<Moe>()) moe.GroupedExperts = !r.GetValue(perExpert);
            DeepSeekSharp.Fp8.Fp8Training.Apply(m, r.GetValue(precision)!);
            m.RecomputeNorms(r.GetValue(recompute));
            m.RecomputeMlaUpProjections(r.GetValue(recomputeUp));
            var opt = new AdamW(m.NamedParameters()) { Moments = DeepSeekSharp.Fp8.Fp8Training.DefaultMoments(r.GetValue(precision)!) };
            var rng = new Random(1);
            var batchGeom = SequenceBatch.Training(b, t);
            var times = new List<double>();
            TimeSpan gcPause = TimeSpan.Zero;
            for (int s = 0; s < w + n; s++)
            {
                var ids = new int[b * t];
                for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(m.Config.VocabSize);
                var pauseBefore = GC.GetTotalPauseDuration();
                var sw = Stopwatch.StartNew();
                // The step's tensors go back to the pool when it ends (the outputs too, as a serving loop's would).
                using (TensorScope.Begin())
                {
                    if (train)
                    {
                        m.ZeroGrad();
                        var loss = LanguageModelLoss.Compute(m, ids, batchGeom, 0f, 0);
                        Backprop.Backward(loss.Total, freeActivations: true);
                        opt.Update(1e-4f);
                    }
                    else
                    {
                        using (GradMode.NoGrad()) m.Forward(ids, batchGeom);
                    }
                }
                sw.Stop();
                if (s >= w)
                {
                    times.Add(sw.Elapsed.TotalSeconds);
                    gcPause += GC.GetTotalPauseDuration() - pauseBefore;
                }
                if (!r.GetValue(json)) Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step {s + 1}/{w + n}{(s < w ? " (warm-up)" : "")}: {sw.Elapsed.TotalSeconds:F3} s"));
            }
            // One more (untimed) step to measure what the graph holds at the end of the forward: the activations
            // kept for the backward (live bytes after a full collection, before vs after the forward).
            double activationMb = 0;
            if (train)
            {
                var ids = new int[b * t];
                for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(m.Config.VocabSize);
                m.ZeroGrad();
                // Pooled arrays are live before the forward too: what the forward takes from the pool counts as well.
                long before = GC.GetTotalMemory(forceFullCollection: true), pooledBefore = StoragePool.HeldBytes;
                var loss = LanguageModelLoss.Compute(m, ids, batchGeom, 0f, 0);
                long grown = GC.GetTotalMemory(forceFullCollection: true) - before, taken = pooledBefore - StoragePool.HeldBytes;
                activationMb = (grown + taken) / (1024.0 * 1024.0);
                Backprop.Backward(loss.Total, freeActivations: true);
            }
            double median = Median(times);
            double tokensPerS = b * t / median;
            double flopsPerToken = TrainingFlops.PerToken(m.Config, t) * (train ? 3 : 1);
            long peakMb = Process.GetCurrentProcess().PeakWorkingSet64 / (1024 * 1024);
            var result = new { tokens_per_s = Math.Round(tokensPerS, 1), step_s_median = Math.Round(median, 4), peak_rss_mb = peakMb, gflops = Math.Round(tokensPerS * flopsPerToken / 1e9, 1),
                gc_pause_share = Math.Round(gcPause.TotalSeconds / times.Sum(), 3), activation_mb = Math.Round(activationMb, 1) };
            Console.WriteLine(r.GetValue(json) ? JsonSerializer.Serialize(result)
                : string.Create(CultureInfo.InvariantCulture, $"{(train ? "train" : "forward")}: {result.tokens_per_s} tokens/s, median step {median:F3} s, peak RSS {peakMb} MB, {result.gflops} GFLOP/s useful, {result.gc_pause_share:P1} of the time in GC pauses{(train ? $", activations kept for the backward {activationMb:F0} MB" : "")}"));
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// LoRA on <paramref name="targets"/> (entries matching nothing in this model are left out, so one default serves
    /// V3-style and V2-Lite-style attention), with the frozen base kept as <paramref name="basePrecision"/>, as a
    /// <c>dss train</c> run with <c>adapter: lora</c> and <c>base_model_precision</c> would hold it.
    /// </summary>
    private static void ApplyLora(DeepSeekModel m, int rank, string targets, string basePrecision)
    {
        if (rank < 0) throw new DeepSeekSharpException("--lora-r must be ≥ 0");
        if (rank == 0)
        {
            if (basePrecision != "fp32") throw new DeepSeekSharpException("--base-precision applies to a LoRA run (give --lora-r)");
            return;
        }
        var paths = DeepSeekSharp.FineTuning.Lora.LoraAdapters.CandidateLinears(m).Select(c => c.Path).ToList();
        var entries = targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(e => paths.Any(p => DeepSeekSharp.FineTuning.Lora.LoraAdapters.Selects(e, p))).ToList();
        if (entries.Count == 0) throw new DeepSeekSharpException($"--lora-targets: '{targets}' matches no Linear of the model");
        var storage = DeepSeekSharp.FineTuning.FrozenBaseStorage.Resolve(basePrecision, m.Config);
        if (storage != WeightStorage.Fp32) DeepSeekSharp.Inference.InferenceWeights.Compress(m, storage);
        DeepSeekSharp.FineTuning.Lora.LoraAdapters.Apply(m, new DeepSeekSharp.FineTuning.Lora.LoraSettings(rank, 2 * rank, entries), seed: 0);
    }
}
