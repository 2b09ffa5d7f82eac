using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss generate</c>: text generation with the latent cache, optionally MTP-speculative.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelOption();
        var prompt = new Option<string?>("--prompt") { Description = "prompt text (needs tokenizer.json in the model folder)" };
        var tokens = new Option<string?>("--tokens") { Description = "prompt as comma-separated token ids instead of --prompt" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate at most", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 0 };
        var penalty = new Option<float>("--repetition-penalty") { Description = "penalise tokens already seen (1 = off)", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "random seed for sampling" };
        var stop = new Option<string[]>("--stop") { Description = "stop string (repeatable)" };
        var speculative = new Option<string?>("--speculative") { Description = "mtp: draft with the MTP module, verify with the main model" };
        speculative.AcceptOnlyFromAmong("mtp");
        var json = new Option<bool>("--json") { Description = "print {tokens, text, accepted_draft_tokens, tokens_per_s, ...} instead of streaming text" };
        var weights = CliCommon.WeightsOption();
        var adapter = CliCommon.AdapterOption();
        var device = CudaCommand.DeviceOption();
        var cmd = new Command("generate", "Generate text from a prompt (MLA latent cache; --speculative mtp for MTP speculative decoding)")
        {
            model, prompt, tokens, maxNew, temperature, topP, topK, penalty, seed, stop, speculative, weights, adapter, device, json,
        };
        cmd.SetAction((r, ct) => Task.FromResult(CliCommon.Run(() =>
        {
            string dir = r.GetValue(model)!;
            string? text = r.GetValue(prompt), ids = r.GetValue(tokens);
            if ((text is null) == (ids is null)) throw new DeepSeekSharpException("give exactly one of --prompt TEXT or --tokens IDS");
            using var onDevice = CudaCommand.UseDevice(r.GetValue(device)!);
            var m = CliCommon.LoadForInference(dir, r.GetValue(weights)!, r.GetValue(adapter));
            var tokenizer = ModelTokenizer.TryLoad(dir);
            if (text is not null && tokenizer is null) throw new DeepSeekSharpException($"{dir}: no tokenizer.json for --prompt (use --tokens)");
            int[] promptIds = text is not null ? ModelTokenizer.EncodePrompt(tokenizer!, dir, text) : CliCommon.ParseTokens(ids!);
            CliCommon.CheckTokens(promptIds, m.Config.VocabSize);
            var options = new GenerationOptions
            {
                MaxNewTokens = r.GetValue(maxNew),
                Sampling = new SamplingOptions
                {
                    Temperature = r.GetValue(temperature), TopP = r.GetValue(topP), TopK = r.GetValue(topK),
                    RepetitionPenalty = r.GetValue(penalty), Seed = r.GetValue(seed),
                },
                StopTokens = tokenizer?.EosId is int eos ? [eos] : [],
                StopStrings = r.GetValue(stop) ?? [],
                SpeculativeMtp = r.GetValue(speculative) == "mtp",
            };
            options.Sampling.Validate();
            var generator = new TextGenerator(new CachedDecoder(m), tokenizer);
            bool asJson = r.GetValue(json);
            int printed = 0;
            var result = generator.Generate(promptIds, options, asJson || tokenizer is null ? null : token =>
            {
                Console.Write(token.Text);
                printed += token.Text.Length;
            }, ct);
            if (asJson)
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    tokens = result.Tokens, text = result.Text, accepted_draft_tokens = result.AcceptedDraftTokens,
                    tokens_per_s = Math.Round(result.TokensPerSecond, 2), drafted_tokens = result.DraftedTokens,
                    acceptance_rate = Math.Round(result.AcceptanceRate, 4), finish_reason = result.FinishReason,
                }));
            else if (tokenizer is null) Console.WriteLine(string.Join(",", result.Tokens));
            else Console.WriteLine(result.Text!.Length > printed ? result.Text[printed..] : "");
            if (!asJson)
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{result.Tokens.Length} tokens, {result.TokensPerSecond:F1} tokens/s{(options.SpeculativeMtp ? $", MTP acceptance {result.AcceptanceRate:P1}" : "")}]"));
            return 0;
        })));
        return cmd;
    }
}
