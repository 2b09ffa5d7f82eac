using System.CommandLine;
using DeepSeekSharp.Cli.Serving;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss serve</c> (OpenAI-compatible HTTP API) and <c>dss chat</c> (interactive terminal chat).</summary>
internal static class ServeCommand
{
    /// <summary>The model (with its adapter, if any) and tokenizer; the model's name is the base folder's, adapter or not.</summary>
    private static (DeepSeekChatClient Client, HfTokenizer Tokenizer) Load(string dir, bool speculative, string weights, string? adapter)
    {
        var model = CliCommon.LoadForInference(dir, weights, adapter);
        var tokenizer = ModelTokenizer.TryLoad(dir) ?? throw new DeepSeekSharpException($"{dir}: no tokenizer.json (the server and chat need one)");
        return (new DeepSeekChatClient(new CachedDecoder(model), tokenizer, Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/')), speculative), tokenizer);
    }

    public static Command CreateServe()
    {
        var model = CliCommon.ModelOption();
        var host = new Option<string>("--host") { Description = "address to bind (loopback by default)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string?>("--api-key") { Description = "require 'Authorization: Bearer KEY'" };
        var concurrency = new Option<int>("--max-concurrent") { Description = "generations at once (more wait, up to 16, then 429)", DefaultValueFactory = _ => 2 };
        var maxLogprobs = new Option<int>("--max-logprobs")
        {
            Description = "most top ids a completions request may ask per position (logprobs, prompt_logprobs; vLLM's flag and default)", DefaultValueFactory = _ => 20,
        };
        var speculative = new Option<bool>("--speculative-mtp") { Description = "use MTP speculative decoding when the model has an MTP module" };
        var weights = CliCommon.WeightsOption();
        var adapter = CliCommon.AdapterOption();
        var cmd = new Command("serve", "Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models)")
        {
            model, host, port, apiKey, concurrency, maxLogprobs, speculative, weights, adapter,
        };
        cmd.SetAction(async (r, ct) =>
        {
            WebApplication? app = null;
            int code = CliCommon.Run(() =>
            {
                var (client, tokenizer) = Load(r.GetValue(model)!, r.GetValue(speculative), r.GetValue(weights)!, r.GetValue(adapter));
                if (r.GetValue(port) is < 1 or > 65535) throw new DeepSeekSharpException("--port must be in 1..65535");
                if (r.GetValue(maxLogprobs) < 0) throw new DeepSeekSharpException("--max-logprobs must be ≥ 0");
                app = OpenAiServer.Build(client, tokenizer, new ServerOptions
                {
                    Host = r.GetValue(host)!, Port = r.GetValue(port), ApiKey = r.GetValue(apiKey), MaxConcurrent = Math.Max(1, r.GetValue(concurrency)),
                    MaxLogprobs = r.GetValue(maxLogprobs),
                });
                return 0;
            });
            if (code != 0 || app is null) return code;
            try
            {
                await app.StartAsync(ct);
            }
            catch (IOException e)
            {
                Console.Error.WriteLine($"error: cannot listen on {r.GetValue(host)}:{r.GetValue(port)} ({e.Message.ReplaceLineEndings(" ")})");
                return 1;
            }
            string withAdapter = r.GetValue(adapter) is string a ? $" with adapter {a}" : "";
            Console.WriteLine($"serving {r.GetValue(model)}{withAdapter} on http://{r.GetValue(host)}:{r.GetValue(port)}/v1 (Ctrl+C to stop)");
            try { await Task.Delay(Timeout.Infinite, ct); } catch (OperationCanceledException) { }
            await app.StopAsync(CancellationToken.None);
            return 0;
        });
        return cmd;
    }

    public static Command CreateChat()
    {
        var model = CliCommon.ModelOption();
        var system = new Option<string?>("--system") { Description = "system prompt" };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.7f };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "reply length limit", DefaultValueFactory = _ => 256 };
        var weights = CliCommon.WeightsOption();
        var adapter = CliCommon.AdapterOption();
        var cmd = new Command("chat", "Chat with the model in the terminal (DeepSeek chat template, history, streaming; /reset, /exit)")
        {
            model, system, temperature, maxNew, weights, adapter,
        };
        cmd.SetAction(async (r, ct) =>
        {
            DeepSeekChatClient? client = null;
            int code = CliCommon.Run(() =>
            {
                if (r.GetValue(maxNew) < 1) throw new DeepSeekSharpException("--max-new-tokens must be ≥ 1");
                client = Load(r.GetValue(model)!, false, r.GetValue(weights)!, r.GetValue(adapter)).Client;
                return 0;
            });
            if (code != 0 || client is null) return code;
            var history = new List<ChatMessage>();
            if (r.GetValue(system) is string sys) history.Add(new ChatMessage(ChatRole.System, sys));
            int baseCount = history.Count;
            Console.WriteLine("chat ready: /reset clears the history, /exit (or Ctrl+D) quits");
            while (!ct.IsCancellationRequested)
            {
                Console.Write("> ");
                string? line = Console.ReadLine();
                if (line is null || line.Trim() == "/exit") break;
                if (line.Trim() == "/reset") { history.RemoveRange(baseCount, history.Count - baseCount); continue; }
                if (line.Length == 0) continue;
                history.Add(new ChatMessage(ChatRole.User, line));
                // A long conversation outgrows the context: the oldest turns make room (the system prompt stays),
                // then the reply is shortened to what is left.
                int maxNewTokens = r.GetValue(maxNew);
                int dropped = ChatHistory.DropOldestTurns(history, baseCount, h => client.EncodeChat(h).Length + maxNewTokens + 1 <= client.MaxContext);
                if (dropped > 0)
                    Console.Error.WriteLine($"note: dropped the oldest {(dropped == 1 ? "turn" : $"{dropped} turns")} to fit the model's context of {client.MaxContext} tokens");
                maxNewTokens = Math.Min(maxNewTokens, client.MaxContext - client.EncodeChat(history).Length - 1);
                if (maxNewTokens < 1)
                {
                    Console.Error.WriteLine($"error: the message does not fit the model's context of {client.MaxContext} tokens");
                    history.RemoveAt(history.Count - 1);
                    continue;
                }
                var reply = new System.Text.StringBuilder();
                try
                {
                    await foreach (var update in client.GetStreamingResponseAsync(history,
                        new ChatOptions { Temperature = r.GetValue(temperature), MaxOutputTokens = maxNewTokens }, ct))
                    {
                        Console.Write(update.Text);
                        reply.Append(update.Text);
                    }
                }
                catch (DeepSeekSharpException e)
                {
                    Console.Error.WriteLine($"error: {e.Message}");
                    history.RemoveAt(history.Count - 1);
                    continue;
                }
                catch (OperationCanceledException) { break; }
                Console.WriteLine();
                history.Add(new ChatMessage(ChatRole.Assistant, reply.ToString()));
            }
            return 0;
        });
        return cmd;
    }
}
