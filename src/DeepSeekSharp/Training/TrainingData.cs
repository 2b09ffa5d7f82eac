using System.Text;
using System.Text.Json;
using DeepSeekSharp.Data;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Training;

/// <summary>
/// Tokenises the configured datasets once into a packed uint16/uint32 file (documents separated by EOS) under the
/// output folder, then serves batches from it memory-mapped. A signature file records what was tokenised, so a
/// changed dataset list or tokenizer rebuilds the cache.
/// </summary>
public sealed class TrainingData : IDisposable
{
    private TrainingData(TokenFile file, PackedBatches batches, double validationBytesPerToken)
    {
        File = file;
        Batches = batches;
        ValidationBytesPerToken = validationBytesPerToken;
    }

    public TokenFile File { get; }

    public PackedBatches Batches { get; }

    /// <summary>UTF-8 bytes per token over the validation split (turns nats/token into bits/byte).</summary>
    public double ValidationBytesPerToken { get; }

    public static TrainingData Prepare(TrainConfig cfg, ITextTokenizer tokenizer, string tokenizerSignature, Action<string> log)
    {
        if (cfg.Datasets.Count == 0) throw new DeepSeekSharpException("datasets: no dataset configured");
        string dataDir = Path.Combine(cfg.OutputDir, "data");
        Directory.CreateDirectory(dataDir);
        int bytesPerToken = tokenizer.VocabSize <= ushort.MaxValue + 1 ? 2 : 4;
        string signature = JsonSerializer.Serialize(new
        {
            datasets = cfg.Datasets.Select(d => new { path = Path.GetFullPath(d.Path), d.Type, size = SizeOf(d.Path) }),
            tokenizer = tokenizerSignature,
            bytesPerToken,
        });
        string binPath = Path.Combine(dataDir, "tokens.bin"), sigPath = Path.Combine(dataDir, "tokens.json");
        if (!System.IO.File.Exists(binPath) || !System.IO.File.Exists(sigPath) || System.IO.File.ReadAllText(sigPath) != signature)
        {
            log($"tokenizing {cfg.Datasets.Count} dataset(s) into {binPath}");
            int eos = tokenizer.EosId ?? throw new DeepSeekSharpException("the tokenizer has no end-of-sequence token to separate documents");
            long docs = 0, tokens = 0;
            TokenFile.Write(binPath, Chunks(), bytesPerToken);
            IEnumerable<int[]> Chunks()
            {
                foreach (var spec in cfg.Datasets)
                {
                    if (spec.Type is "bin16" or "bin32")
                    {
                        // Pre-tokenised shards are copied as they are (they carry their own document separators).
                        using var shard = TokenFile.Open(spec.Path, spec.Type == "bin16" ? 2 : 4);
                        for (long at = 0; at < shard.Count; at += 1 << 20)
                        {
                            var part = new int[(int)Math.Min(1 << 20, shard.Count - at)];
                            shard.Read(at, part);
                            foreach (int id in part)
                                if (id < 0 || id >= tokenizer.VocabSize)
                                    throw new DeepSeekSharpException($"{spec.Path}: token id {id} is outside the tokenizer's vocabulary [0, {tokenizer.VocabSize})");
                            tokens += part.Length;
                            yield return part;
                        }
                        continue;
                    }
                    foreach (var doc in DocumentReader.Read(spec.Path, spec.Type))
                    {
                        // A document's ids go out chunk by chunk, so a long one never holds them all at once.
                        foreach (var ids in tokenizer.EncodeChunks(doc.Text))
                        {
                            tokens += ids.Length;
                            yield return ids;
                        }
                        docs++;
                        tokens++;
                        yield return [eos];
                    }
                }
            }
            IO.AtomicFile.WriteAllText(sigPath, signature);
            log($"tokenized {docs:N0} document(s) into {tokens:N0} tokens");
        }
        var file = TokenFile.Open(binPath, bytesPerToken);
        var batches = new PackedBatches(file, cfg.SequenceLen, cfg.ValSetSize, cfg.Seed);
        return new TrainingData(file, batches, MeasureBytesPerToken(file, batches, tokenizer));
    }

    private static double MeasureBytesPerToken(TokenFile file, PackedBatches batches, ITextTokenizer tokenizer)
    {
        long n = Math.Min(batches.ValidationTokens, 1 << 20);
        if (n == 0) return 1;
        var ids = new int[n];
        file.Read(batches.ValidationStart, ids);
        return (double)Encoding.UTF8.GetByteCount(tokenizer.Decode(ids)) / n;
    }

    private static long SizeOf(string path) =>
        System.IO.File.Exists(path) ? new FileInfo(path).Length
        : Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length)
        : throw new DeepSeekSharpException($"{path}: dataset file or folder not found");

    public void Dispose() => File.Dispose();
}
