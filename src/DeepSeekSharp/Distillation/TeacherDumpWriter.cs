using System.Runtime.InteropServices;
using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Distillation;

/// <summary>Writes <see cref="TeacherDump"/> folders: sequences are buffered and written as a shard every <see cref="ShardRows"/> rows.</summary>
public sealed class TeacherDumpWriter
{
    private readonly string _dir;
    private readonly List<KdSequence> _pending = [];
    private readonly List<string> _shards = [];
    private readonly Dictionary<string, string> _metadata;
    private long _pendingRows;

    /// <param name="shardRows">rows per shard (about 8·K bytes each): a shard is written once this many are buffered</param>
    public TeacherDumpWriter(string dir, int k, IReadOnlyDictionary<string, string> metadata, long shardRows = 1 << 20)
    {
        if (System.IO.Directory.Exists(dir) && System.IO.Directory.EnumerateFileSystemEntries(dir).Any())
            throw new DeepSeekSharpException($"{dir}: the output folder exists and is not empty");
        System.IO.Directory.CreateDirectory(dir);
        (_dir, K, ShardRows, _metadata) = (dir, k, shardRows, new Dictionary<string, string>(metadata));
    }

    public int K { get; }
    public long ShardRows { get; }
    public long Sequences { get; private set; }
    public long Rows { get; private set; }

    public void Add(KdSequence sequence)
    {
        if (sequence.K != K) throw new ArgumentException($"a top-{sequence.K} sequence in a top-{K} dump");
        sequence.Validate(_dir);
        _pending.Add(sequence);
        _pendingRows += sequence.Positions.Length;
        (Sequences, Rows) = (Sequences + 1, Rows + sequence.Positions.Length);
        if (_pendingRows >= ShardRows) Flush();
    }

    /// <summary>Writes what is buffered and the index; the folder is then a complete dump.</summary>
    public void Complete()
    {
        if (_pending.Count > 0 || _shards.Count == 0) Flush();
        var index = new Dictionary<string, object> { ["format"] = TeacherDump.Format, ["top_k"] = K, ["sequences"] = Sequences, ["rows"] = Rows, ["shards"] = _shards, ["metadata"] = _metadata };
        File.WriteAllText(Path.Combine(_dir, TeacherDump.IndexFile), JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    private void Flush()
    {
        string name = $"kd-{_shards.Count:D5}.safetensors";
        var tokens = _pending.SelectMany(s => s.Tokens).ToArray();
        var positions = _pending.SelectMany(s => s.Positions).ToArray();
        var ids = _pending.SelectMany(s => s.Ids).ToArray();
        var logprobs = _pending.SelectMany(s => s.LogProbs).ToArray();
        long[] tokenOffsets = new long[_pending.Count + 1], rowOffsets = new long[_pending.Count + 1];
        for (int i = 0; i < _pending.Count; i++)
        {
            tokenOffsets[i + 1] = tokenOffsets[i] + _pending[i].Tokens.Length;
            rowOffsets[i + 1] = rowOffsets[i] + _pending[i].Positions.Length;
        }
        int rows = positions.Length;
        SafeTensorsWriter.WriteRaw(Path.Combine(_dir, name),
        [
            new RawTensor("token_ids", DType.I32, [tokens.Length], MemoryMarshal.AsBytes(tokens.AsSpan()).ToArray()),
            new RawTensor("sequence_offsets", DType.I64, [tokenOffsets.Length], MemoryMarshal.AsBytes(tokenOffsets.AsSpan()).ToArray()),
            new RawTensor("row_offsets", DType.I64, [rowOffsets.Length], MemoryMarshal.AsBytes(rowOffsets.AsSpan()).ToArray()),
            new RawTensor("positions", DType.I32, [rows], MemoryMarshal.AsBytes(positions.AsSpan()).ToArray()),
            new RawTensor("target_token_ids", DType.I32, [rows, K], MemoryMarshal.AsBytes(ids.AsSpan()).ToArray()),
            new RawTensor("logprobs", DType.F32, [rows, K], MemoryMarshal.AsBytes(logprobs.AsSpan()).ToArray()),
        ], new Dictionary<string, string>(_metadata) { ["format"] = TeacherDump.Format, ["top_k"] = K.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        _shards.Add(name);
        _pending.Clear();
        _pendingRows = 0;
    }
}
