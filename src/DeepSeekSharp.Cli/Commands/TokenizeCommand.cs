using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Data;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss tokenize</c> and <c>dss tokenizer train|bench</c>.</summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "HF tokenizer.json (or a folder holding one)", Required = true };
        var jsonl = new Option<string?>("--jsonl") { Description = "input JSON lines, each {\"text\": \"...\"}; prints {\"ids\": [...]} per line, in order" };
        var text = new Option<string?>("--text") { Description = "one text to encode" };
        var cmd = new Command("tokenize", "Encode text with a tokenizer.json (no special tokens added)") { tokenizer, jsonl, text };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var tok = Load(r.GetValue(tokenizer)!);
            string? input = r.GetValue(jsonl), single = r.GetValue(text);
            if ((input is null) == (single is null)) throw new DeepSeekSharpException("give exactly one of --jsonl FILE or --text TEXT");
            using var stdout = Console.OpenStandardOutput();
            if (single is not null) WriteIds(stdout, tok, single);
            else
            {
                var texts = Utf8Text.JsonLines(input!, (root, n) =>
                    root.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? Utf8Text.GetString(t, input!, n, "text")
                        : throw new DeepSeekSharpException($"{input}:{n}: missing string field 'text'"), what: "JSON-lines file");
                foreach (var value in texts) WriteIds(stdout, tok, value);
            }
            return 0;
        }));
        return cmd;
    }

    public static Command CreateGroup()
    {
        var group = new Command("tokenizer", "Train or benchmark byte-level BPE tokenizers");
        var data = new Option<string[]>("--data") { Description = "training text: files, folders or JSON lines (repeatable)", Required = true, AllowMultipleArgumentsPerToken = true };
        var vocab = new Option<int>("--vocab-size") { Description = "vocabulary size including the 3 special tokens and 256 bytes", Required = true };
        var output = CliCommon.OutOption("output tokenizer.json");
        var train = new Command("train", "Train a byte-level BPE (DeepSeek-V3 pre-tokenizer) and save an HF tokenizer.json") { data, vocab, output };
        train.SetAction(r => CliCommon.Run(() =>
        {
            var sw = Stopwatch.StartNew();
            var texts = r.GetValue(data)!.SelectMany(p => DocumentReader.Read(p)).Select(d => d.Text);
            var tok = BpeTrainer.TrainAndSave(texts, r.GetValue(vocab), r.GetValue(output)!);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"wrote {r.GetValue(output)}: {tok.VocabSize} tokens, {tok.Model.Merges.Count} merges in {sw.Elapsed.TotalSeconds:F1} s"));
            return 0;
        }));
        group.Subcommands.Add(train);

        var byteOut = CliCommon.OutOption("output tokenizer.json");
        var exportByte = new Command("byte", "Write the built-in byte tokenizer (256 bytes + BOS/EOS/PAD) as an HF tokenizer.json") { byteOut };
        exportByte.SetAction(r => CliCommon.Run(() =>
        {
            ByteTokenizer.SaveAsHfJson(r.GetValue(byteOut)!);
            return 0;
        }));
        group.Subcommands.Add(exportByte);

        var btok = new Option<string>("--tokenizer") { Description = "HF tokenizer.json", Required = true };
        var file = new Option<string>("--file") { Description = "text file to encode", Required = true };
        var bench = new Command("bench", "Encoding speed in MB/s on one thread (median of 5 runs after a warm-up)") { btok, file };
        bench.SetAction(r => CliCommon.Run(() =>
        {
            var path = r.GetValue(file)!;
            string content = DeepSeekSharp.IO.InputFile.ReadAllText(path);
            double mb = System.Text.Encoding.UTF8.GetByteCount(content) / 1e6;
            var times = new List<double>();
            int tokens = 0;
            for (int i = 0; i < 6; i++)
            {
                var tok = Load(r.GetValue(btok)!); // fresh tokenizer: no warm word cache
                var sw = Stopwatch.StartNew();
                tokens = tok.Encode(content).Length;
                if (i > 0) times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            double med = times[times.Count / 2];
            Console.WriteLine(JsonSerializer.Serialize(new { mb = Math.Round(mb, 3), tokens, seconds_median = Math.Round(med, 4), mb_per_s = Math.Round(mb / med, 2) }));
            return 0;
        }));
        group.Subcommands.Add(bench);
        return group;
    }

    /// <summary>Writes <c>{"ids":[...]}</c> and a newline as the ids are made, so a long text's line is never built whole.</summary>
    private static void WriteIds(Stream output, HfTokenizer tokenizer, string text)
    {
        using (var writer = new Utf8JsonWriter(output))
        {
            writer.WriteStartObject();
            writer.WriteStartArray("ids");
            foreach (var chunk in tokenizer.EncodeChunks(text))
            {
                foreach (int id in chunk) writer.WriteNumberValue(id);
                writer.Flush();
            }
            writer.WriteEndArray();
            writer.WriteEndObject();
        }
        output.WriteByte((byte)'\n');
        output.Flush();
    }

    private static HfTokenizer Load(string path) =>
        HfTokenizer.Load(Directory.Exists(path) ? Path.Combine(path, "tokenizer.json") : path);
}
