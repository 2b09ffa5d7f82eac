using System.Runtime.InteropServices;
using System.Text.Json;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// An offline teacher dump (docs/distillation.md, "File format"): a folder with <c>kd.json</c> (format, top_k, shards) and
/// safetensors shards <c>kd-NNNNN.safetensors</c>, each holding whole sequences: <c>token_ids</c> I32 [tokens],
/// <c>sequence_offsets</c> I64 [S+1] into them, <c>row_offsets</c> I64 [S+1] into the rows, <c>positions</c> I32 [rows],
/// <c>target_token_ids</c> I32 [rows, K] and <c>logprobs</c> F32 [rows, K]. Shards are memory-mapped when read.
/// </summary>
public sealed class TeacherDump : IDisposable
{
    public const string IndexFile = "kd.json";
    public const string Format = "dss-kd-topk-v1";

    private readonly SafeTensorsReader[] _shards;
    private readonly (int Shard, int Index)[] _sequences;
    private readonly long[][] _tokenOffsets, _rowOffsets;
    private Dictionary<ulong, int>? _byKey;

    private TeacherDump(string dir, int k, SafeTensorsReader[] shards)
    {
        (Directory, K, _shards) = (dir, k, shards);
        _tokenOffsets = shards.Select(s => s.ReadInt64("sequence_offsets")).ToArray();
        _rowOffsets = shards.Select(s => s.ReadInt64("row_offsets")).ToArray();
        var seqs = new List<(int, int)>();
        for (int s = 0; s < shards.Length; s++)
            for (int i = 0; i + 1 < _tokenOffsets[s].Length; i++) seqs.Add((s, i));
        _sequences = [.. seqs];
    }

    public string Directory { get; }
    public int K { get; }
    public int Count => _sequences.Length;

    public static TeacherDump Open(string dir)
    {
        string index = Path.Combine(dir, IndexFile);
        if (!File.Exists(index)) throw new DeepSeekSharpException($"{dir}: no {IndexFile} (not a teacher dump written by dss distill dump)");
        using var doc = JsonDocument.Parse(File.ReadAllText(index));
        var root = doc.RootElement;
        if (!root.TryGetProperty("format", out var f) || f.GetString() != Format)
            throw new DeepSeekSharpException($"{index}: format is not {Format}");
        int k = root.GetProperty("top_k").GetInt32();
        var names = root.GetProperty("shards").EnumerateArray().Select(e => e.GetString()!).ToArray();
        var shards = new SafeTensorsReader[names.Length];
        try
        {
            for (int i = 0; i < names.Length; i++)
            {
                shards[i] = SafeTensorsReader.Open(Path.Combine(dir, names[i]));
                var e = shards[i].Get("target_token_ids");
                if (e.Shape.Length != 2 || e.Shape[1] != k) throw new DeepSeekSharpException($"{shards[i].FilePath}: target_token_ids is not [rows, {k}]");
            }
        }
        catch
        {
            foreach (var s in shards) s?.Dispose();
            throw;
        }
        return new TeacherDump(dir, k, shards);
    }

    /// <summary>Sequence <paramref name="index"/> (dump order), copied out of the mapped shard.</summary>
    public KdSequence Sequence(int index)
    {
        var (s, i) = _sequences[index];
        var r = _shards[s];
        int t0 = (int)_tokenOffsets[s][i], t1 = (int)_tokenOffsets[s][i + 1];
        int r0 = (int)_rowOffsets[s][i], r1 = (int)_rowOffsets[s][i + 1];
        return new KdSequence(
            Ints(r, "token_ids")[t0..t1].ToArray(), Ints(r, "positions")[r0..r1].ToArray(),
            Ints(r, "target_token_ids")[(r0 * K)..(r1 * K)].ToArray(),
            MemoryMarshal.Cast<byte, float>(r.GetBytes(r.Get("logprobs")))[(r0 * K)..(r1 * K)].ToArray(), K);
    }

    /// <summary>The sequence whose tokens are exactly <paramref name="tokens"/>, or null.</summary>
    public KdSequence? Find(ReadOnlySpan<int> tokens)
    {
        if (_byKey is null)
        {
            var map = new Dictionary<ulong, int>();
            int index0 = 0;
            for (int s = 0; s < _shards.Length; s++)
            {
                var all = Ints(_shards[s], "token_ids");
                for (int i = 0; i + 1 < _tokenOffsets[s].Length; i++, index0++)
                    map.TryAdd(KdSequence.Key(all[(int)_tokenOffsets[s][i]..(int)_tokenOffsets[s][i + 1]]), index0);
            }
            _byKey = map;
        }
        if (!_byKey.TryGetValue(KdSequence.Key(tokens), out int index)) return null;
        var seq = Sequence(index);
        return seq.Tokens.AsSpan().SequenceEqual(tokens) ? seq : null;
    }

    private static ReadOnlySpan<int> Ints(SafeTensorsReader r, string name)
    {
        var e = r.Get(name);
        if (e.DType != DType.I32) throw new DeepSeekSharpException($"{r.FilePath}: {name} is {e.DType}, not I32");
        return MemoryMarshal.Cast<byte, int>(r.GetBytes(e));
    }

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }
}
