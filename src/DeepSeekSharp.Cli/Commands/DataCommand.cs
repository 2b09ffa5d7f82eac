using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss data preview</c>: how a config's fine-tuning data is rendered, tokenized and masked.</summary>
internal static class DataCommand
{
    /// <summary>Marks around the tokens that carry loss in the text preview.</summary>
    public const string TrainedOpen = "⟦", TrainedClose = "⟧";

    public static Command Create()
    {
        var group = new Command("data", "Inspect training data as the trainer will see it");
        var config = new Option<string?>("--config") { Description = "YAML training config (datasets, tokenizer, chat_template, sequence_len, ...: docs/fine-tuning.md)" };
        var set = new Option<string[]>("--set") { Description = "override a config key: --set key=value (repeatable)", AllowMultipleArgumentsPerToken = false };
        var count = new Option<int?>("--n") { Description = "examples to show (default 3; with --json, all)" };
        var json = new Option<bool>("--json") { Description = "print one JSON line per example in dataset order, {\"input_ids\": [...], \"labels\": [...]} with -100 where there is no loss; counts go to stderr" };
        var preview = new Command("preview", $"Render the first fine-tuning examples with their loss-bearing tokens marked {TrainedOpen}like this{TrainedClose}, and count examples, tokens, trained tokens and dropped examples")
        {
            config, set, count, json,
        };
        preview.SetAction((r, ct) => Task.FromResult(CliCommon.Run(() =>
        {
            int? n = r.GetValue(count);
            if (n is < 0) throw new DeepSeekSharpException($"--n must be ≥ 0 (got {n})");
            var cfg = TrainConfig.Load(r.GetValue(config), r.GetValue(set) ?? []);
            var tokenizer = SftTokenizer.FromConfig(cfg);
            var data = SftDatasets.Load(cfg, tokenizer, line => Console.Error.WriteLine(line), ct);
            if (r.GetValue(json)) WriteJson(data, n ?? int.MaxValue);
            else WriteText(data, tokenizer, n ?? 3);
            return 0;
        })));
        group.Subcommands.Add(preview);
        return group;
    }

    private static void WriteJson(SftData data, int n)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        foreach (var item in data.Examples.Take(n))
        {
            buffer.ResetWrittenCount();
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteStartArray("input_ids");
                foreach (int id in item.Example.InputIds) w.WriteNumberValue(id);
                w.WriteEndArray();
                w.WriteStartArray("labels");
                foreach (int label in item.Example.Labels) w.WriteNumberValue(label);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            Console.Out.Write(Encoding.UTF8.GetString(buffer.WrittenSpan));
            Console.Out.Write('\n');
        }
        Console.Out.Flush();
        Console.Error.WriteLine(Totals(data));
    }

    private static void WriteText(SftData data, SftTokenizer tokenizer, int n)
    {
        var examples = data.Examples;
        for (int i = 0; i < Math.Min(n, examples.Count); i++)
        {
            var (example, source, truncated) = examples[i];
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"── example {i + 1} of {examples.Count} ({source}): {example.InputIds.Length} tokens, {example.TrainedTokens} trained{(truncated ? ", truncated to sequence_len" : "")}"));
            Console.WriteLine(PrintableText.Escape(Marked(example, tokenizer)));
            Console.WriteLine();
        }
        Console.WriteLine($"{TrainedOpen}…{TrainedClose} marks the tokens that carry loss");
        foreach (var d in data.Datasets)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{d.Path} ({d.Type}): {d.Read:N0} read, {d.Kept:N0} kept, {d.Tokens:N0} tokens, {d.TrainedTokens:N0} trained ({Percent(d.TrainedTokens, d.Tokens)}); dropped {d.DroppedTooLong:N0} longer than sequence_len, {d.DroppedUntrained:N0} without a trained token; {d.Truncated:N0} truncated"));
        Console.WriteLine(Totals(data));
    }

    private static string Totals(SftData data)
    {
        long tokens = data.Datasets.Sum(d => d.Tokens), trained = data.Datasets.Sum(d => d.TrainedTokens);
        int dropped = data.Datasets.Sum(d => d.DroppedTooLong + d.DroppedUntrained);
        return string.Create(CultureInfo.InvariantCulture,
            $"total: {data.Examples.Count:N0} examples, {tokens:N0} tokens, {trained:N0} trained tokens ({Percent(trained, tokens)}), {dropped:N0} dropped");
    }

    private static string Percent(long part, long whole) =>
        whole == 0 ? "0 %" : string.Create(CultureInfo.InvariantCulture, $"{100.0 * part / whole:F1} %");

    /// <summary>The example's text, each run of trained tokens decoded between the marks.</summary>
    private static string Marked(TokenizedExample example, SftTokenizer tokenizer)
    {
        var sb = new StringBuilder();
        var ids = example.InputIds;
        for (int start = 0; start < ids.Length;)
        {
            bool trained = example.Labels[start] != TokenizedExample.IgnoreIndex;
            int end = start + 1;
            while (end < ids.Length && (example.Labels[end] != TokenizedExample.IgnoreIndex) == trained) end++;
            string text = tokenizer.Tokenizer.Decode(ids.AsSpan(start, end - start));
            if (trained) sb.Append(TrainedOpen).Append(text).Append(TrainedClose);
            else sb.Append(text);
            start = end;
        }
        return sb.ToString();
    }
}
