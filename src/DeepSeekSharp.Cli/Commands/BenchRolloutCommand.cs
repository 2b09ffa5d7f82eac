using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Rl;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss bench rollout</c>: GRPO's batched sampling against the same completions decoded one sequence at a time.</summary>
internal static class BenchRolloutCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "folder with at least config.json (random init when it has no weights)", Required = true };
        var prompts = new Option<int>("--prompts") { Description = "prompts (random token ids)", DefaultValueFactory = _ => 8 };
        var promptLength = new Option<int>("--prompt-tokens") { Description = "tokens per prompt", DefaultValueFactory = _ => 32 };
        var generations = new Option<int>("--generations") { Description = "completions per prompt (GRPO's num_generations)", DefaultValueFactory = _ => 8 };
        var tokens = new Option<int>("--tokens") { Description = "tokens per completion (no stop token: every completion runs to the limit)", DefaultValueFactory = _ => 32 };
        var single = new Option<int>("--batch1-sequences") { Description = "completions timed one at a time for the batch-1 rate (0 = all)", DefaultValueFactory = _ => 8 };
        var rounds = new Option<int>("--rounds") { Description = "alternating rounds of batched and batch-1 decoding (medians are reported: the two modes see the same machine load)", DefaultValueFactory = _ => 3 };
        var json = new Option<bool>("--json") { Description = "print one JSON line" };
        var cmd = new Command("rollout", "GRPO rollout throughput: prompts × generations sampled together vs batch-1 decoding of the same completions")
        {
            model, prompts, promptLength, generations, tokens, single, rounds, json,
        };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            string dir = r.GetValue(model)!;
            DeepSeekModel m;
            if (ModelCheckpoint.HasWeights(dir)) m = ModelCheckpoint.Load(dir);
            else
            {
                m = new DeepSeekModel(DeepSeekConfig.Load(ModelCheckpoint.ConfigPath(dir)), materialize: true);
                ModelInit.InitializeRandom(m, 0);
            }
            int p = r.GetValue(prompts), len = r.GetValue(promptLength), g = r.GetValue(generations), n = r.GetValue(tokens);
            if (p < 1 || len < 1 || g < 1 || n < 1) throw new DeepSeekSharpException("--prompts, --prompt-tokens, --generations and --tokens must be positive");
            if (len + n > m.Config.MaxPositionEmbeddings) throw new DeepSeekSharpException($"--prompt-tokens + --tokens must fit the model's context of {m.Config.MaxPositionEmbeddings}");
            var rng = new Random(2);
            var promptIds = Enumerable.Range(0, p).Select(_ => Enumerable.Range(0, len).Select(_ => rng.Next(m.Config.VocabSize)).ToArray()).ToList();
            var sampling = new SamplingOptions { Temperature = 1f };
            var decoder = new CachedDecoder(m);
            var none = new HashSet<int>();
            using var noGrad = GradMode.NoGrad();
            // Warm-up (compiles both paths). Each batched round then takes a new decoder, as every GRPO step does, so its
            // time includes packing the weights for the many-row products.
            RolloutSampler.Generate(new CachedDecoder(m), promptIds, g, 2, none, sampling, 0);
            RolloutSampler.Generate(decoder, [promptIds[0]], 1, 2, none, sampling, 0);
            int singles = r.GetValue(single) is > 0 and var s ? Math.Min(s, p * g) : p * g;
            int roundCount = Math.Max(1, r.GetValue(rounds));
            var batchedRates = new List<double>();
            var singleRates = new List<double>();
            var ratios = new List<double>();
            for (int round = 0; round < roundCount; round++)
            {
                var clock = Stopwatch.StartNew();
                var batched = RolloutSampler.Generate(new CachedDecoder(m), promptIds, g, n, none, sampling, 1 + round);
                double batchedRate = batched.Sum(x => (long)x.Completion.Length) / clock.Elapsed.TotalSeconds;
                clock.Restart();
                long singleTokens = 0;
                for (int i = 0; i < singles; i++)
                    singleTokens += RolloutSampler.Generate(decoder, [promptIds[i / g]], 1, n, none, sampling, 1000 + i)[0].Completion.Length;
                double singleRate = singleTokens / clock.Elapsed.TotalSeconds;
                batchedRates.Add(batchedRate);
                singleRates.Add(singleRate);
                ratios.Add(batchedRate / singleRate);
            }
            double batchedMedian = Median(batchedRates), singleMedian = Median(singleRates), ratioMedian = Median(ratios);
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    sequences = p * g, prompt_tokens = len, completion_tokens = n, rounds = roundCount, batched_tokens_per_s = Math.Round(batchedMedian, 1),
                    batch1_tokens_per_s = Math.Round(singleMedian, 1), speedup = Math.Round(ratioMedian, 2),
                    speedup_min = Math.Round(ratios.Min(), 2), speedup_max = Math.Round(ratios.Max(), 2),
                }));
            else
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"rollouts: {p}×{g} sequences of {n} tokens after {len}-token prompts, medians of {roundCount} rounds: batched {batchedMedian:F1} tokens/s, batch-1 {singleMedian:F1} tokens/s ({ratioMedian:F2}×; rounds {ratios.Min():F2}–{ratios.Max():F2}×)"));
            return 0;
        }));
        return cmd;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
