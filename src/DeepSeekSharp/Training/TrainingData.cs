using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Data;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Training;

/// <summary>
/// Tokenises the configured datasets once into a packed uint16/uint32 file (documents separated by EOS) under the
/// output folder, then serves batches from it memory-mapped. A signature file records what was tokenised, keyed on
/// content (SHA-256 of every dataset file read and of the tokenizer file, with the tokenizer's vocabulary size and
/// EOS id), so a dataset edited in place or a tokenizer replaced at the same path rebuilds the cache.
/// </summary>
public sealed class TrainingData : ITrainingBatches, IDisposable
{
    private readonly int _microBatch;
    private readonly SequenceBatch _geometry;

    private TrainingData(TokenFile file, PackedBatches batches, double validationBytesPerToken, int microBatch, int seqLen)
    {
        File = file;
        Batches = batches;
        ValidationBytesPerToken = validationBytesPerToken;
        _microBatch = microBatch;
        _geometry = SequenceBatch.Training(microBatch, seqLen);
    }

    public TokenFile File { get; }

    public PackedBatches Batches { get; }

    /// <summary>UTF-8 bytes per token over the validation split (turns nats/token into bits/byte).</summary>
    public double ValidationBytesPerToken { get; }

    public string Summary => $"pre-training on {File.Count:N0} tokens in windows of {_geometry.SeqLen} (documents packed without masking)";

    /// <summary>B windows of the training part; every token is its own label.</summary>
    public TrainingBatch Train(long index)
    {
        var tokens = new int[_geometry.Tokens];
        Batches.TrainBatch(index, _microBatch, tokens);
        return new TrainingBatch(tokens, tokens, _geometry);
    }

    public int ValidationBatches => (Batches.ValidationWindows + _microBatch - 1) / _microBatch;

    /// <summary>Validation windows B·index … in order (the last batch may be smaller).</summary>
    public TrainingBatch Validation(int index)
    {
        int t = _geometry.SeqLen, first = index * _microBatch, n = Math.Min(_microBatch, Batches.ValidationWindows - first);
        var tokens = new int[n * t];
        for (int i = 0; i < n; i++) Batches.ValidationWindow(first + i, tokens.AsSpan(i * t, t));
        return new TrainingBatch(tokens, tokens, n == _microBatch ? _geometry : SequenceBatch.Training(n, t));
    }

    /// <param name="tokenizerFile">the tokenizer's file, or "byte" for the built-in one</param>
    /// <param name="ct">stops hashing and tokenising between buffers and documents (OperationCanceledException)</param>
    public static TrainingData Prepare(TrainConfig cfg, ITextTokenizer tokenizer, string tokenizerFile, Action<string> log, CancellationToken ct = default)
    {
        if (cfg.Datasets.Count == 0) throw new DeepSeekSharpException("datasets: no dataset configured");
        string dataDir = Path.Combine(cfg.OutputDir, "data");
        Directory.CreateDirectory(dataDir);
        int bytesPerToken = tokenizer.VocabSize <= ushort.MaxValue + 1 ? 2 : 4;
        string signature = JsonSerializer.Serialize(new
        {
            datasets = cfg.Datasets.Select(d => new
            {
                path = Path.GetFullPath(d.Path), d.Type,
                files = DocumentReader.SourceFiles(d.Path).Select(f => new { path = Path.GetFullPath(f), size = new FileInfo(f).Length, sha256 = ContentHash(f, ct) }),
            }),
            tokenizer = new
            {
                file = tokenizerFile, sha256 = System.IO.File.Exists(tokenizerFile) ? ContentHash(tokenizerFile, ct) : null,
                vocab = tokenizer.VocabSize, eos = tokenizer.EosId,
            },
            bytesPerToken,
        });
        string binPath = Path.Combine(dataDir, "tokens.bin"), sigPath = Path.Combine(dataDir, "tokens.json");
        if (!System.IO.File.Exists(binPath) || !System.IO.File.Exists(sigPath) || System.IO.File.ReadAllText(sigPath) != signature)
        {
            log($"tokenizing {cfg.Datasets.Count} dataset(s) into {binPath}");
            int eos = tokenizer.EosId ?? throw new DeepSeekSharpException("the tokenizer has no end-of-sequence token to separate documents");
            long docs = 0, tokens = 0;
            // The old signature goes first: a run stopped between the two writes must not pair it with new tokens.
            System.IO.File.Delete(sigPath);
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
                            ct.ThrowIfCancellationRequested();
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
                        ct.ThrowIfCancellationRequested();
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
        return new TrainingData(file, batches, MeasureBytesPerToken(file, batches, tokenizer), cfg.MicroBatchSize, cfg.SequenceLen);
    }

    private static double MeasureBytesPerToken(TokenFile file, PackedBatches batches, ITextTokenizer tokenizer)
    {
        long n = Math.Min(batches.ValidationTokens, 1 << 20);
        if (n == 0) return 1;
        var ids = new int[n];
        file.Read(batches.ValidationStart, ids);
        return (double)Encoding.UTF8.GetByteCount(tokenizer.Decode(ids)) / n;
    }

    /// <summary>SHA-256 of the file's bytes (about 1.6 GB/s with SHA-NI, so even large corpora key quickly).</summary>
    private static string ContentHash(string path, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buffer = new byte[1 << 20];
        int n;
        while ((n = stream.Read(buffer)) > 0)
        {
            ct.ThrowIfCancellationRequested();
            hash.AppendData(buffer, 0, n);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    public void Dispose() => File.Dispose();
}
