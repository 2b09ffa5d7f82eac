using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.HfCheckpoint;

/// <summary>
/// How a written checkpoint stores its weights (<c>dss init</c>, <c>dss merge</c>): every tensor F32, every tensor BF16,
/// or DeepSeek-V3's FP8 layout (attention and MLP/expert Linears as E4M3 with 128×128 <c>weight_scale_inv</c>, the rest
/// in high precision).
/// </summary>
public enum CheckpointDType { F32, Bf16, Fp8 }

/// <summary>
/// Writes a random-init checkpoint tensor by tensor (what <c>dss init</c> runs): the values are exactly those of
/// <see cref="ModelInit.InitializeRandom"/> with the same seed (one generator, parameters in order), but only one tensor
/// is ever in memory, so a model far larger than memory (a 16B MoE as an FP8 checkpoint on a 24 GiB machine) can be
/// made. With FP8 the Linears of <see cref="Fp8.Fp8Checkpoint.Fp8Linears"/> are quantised per 128×128 block as
/// <see cref="Fp8.Fp8Checkpoint.Quantize"/> does, so the file equals quantising the fp32 init.
/// </summary>
public static class RandomCheckpointWriter
{
    /// <summary>Bytes written so far, of the total (for a progress line).</summary>
    public readonly record struct Progress(long Written, long Total, TimeSpan Elapsed);

    /// <summary>Writes config.json, generation_config.json and model.safetensors into <paramref name="dir"/> (a folder being assembled).</summary>
    public static void Write(string dir, string configJson, CheckpointDType dtype, int seed, Action<Progress>? progress = null)
    {
        var config = JsonNode.Parse(configJson)!.AsObject();
        var model = new DeepSeekModel(DeepSeekConfig.Parse(configJson, dir), materialize: false);
        var quantized = dtype == CheckpointDType.Fp8 ? Fp8.Fp8Checkpoint.QuantizedWeightNames(model) : [];
        DType high = dtype == CheckpointDType.F32 ? DType.F32 : DType.BF16;

        // What the file holds, in ModelCheckpoint.StateDict's order: parameters, buffers, then the MTP layers' copies of
        // the shared embedding and head (whose values must be kept until written again).
        var parameters = model.NamedParameters().ToList();
        var buffers = model.NamedBuffers().ToList();
        var copies = model.MtpSharedCopies().ToList();
        var entries = new List<(string Name, DType DType, int[] Shape)>();
        var produce = new List<Action<Stream>>();
        var rng = new Random(seed);
        float std = model.Config.InitializerRange;
        float[] values = [];
        Fp8.Fp8Tensor? pendingScales = null;
        var kept = new Dictionary<Tensor, float[]>(ReferenceEqualityComparer.Instance);
        var chunk = new byte[1 << 16];
        foreach (var (name, p) in parameters)
        {
            var shape = (int[])p.Shape.Clone();
            int length = checked((int)p.Length);
            bool keep = copies.Any(c => ReferenceEquals(c.Shared, p));
            void Generate()
            {
                if (values.Length < length) values = new float[length];
                var span = values.AsSpan(0, length);
                if (p.Rank == 1) span.Fill(1f); // every 1-D parameter of the family is a norm weight
                else ModelInit.FillNormal(span, rng, std);
                if (keep) kept[p] = span.ToArray();
            }
            if (quantized.Contains(name))
            {
                entries.Add((name, DType.F8E4M3, shape));
                produce.Add(s =>
                {
                    Generate();
                    pendingScales = Fp8.Fp8Quantizer.QuantizeBlocks(values.AsSpan(0, length), shape[0], shape[1], $"{dir}: {name}");
                    s.Write(pendingScales.Codes, 0, length);
                });
                entries.Add((name + "_scale_inv", DType.F32, [(shape[0] + 127) / 128, (shape[1] + 127) / 128]));
                produce.Add(s => { s.Write(MemoryMarshal.AsBytes(pendingScales!.Scales.AsSpan())); pendingScales = null; });
            }
            else
            {
                entries.Add((name, high, shape));
                produce.Add(s => { Generate(); SafeTensorsWriter.WriteValues(s, values.AsSpan(0, length), high, chunk); });
            }
        }
        foreach (var (name, b) in buffers)
        {
            entries.Add((name, high, (int[])b.Shape.Clone()));
            int length = checked((int)b.Length);
            produce.Add(s => SafeTensorsWriter.WriteValues(s, new float[length], high, chunk)); // routing biases start at 0
        }
        foreach (var (name, shared) in copies)
        {
            entries.Add((name, high, (int[])shared.Shape.Clone()));
            produce.Add(s => SafeTensorsWriter.WriteValues(s, kept[shared], high, chunk));
        }

        long total = entries.Sum(e => ShapeUtil.Numel(e.Shape) * NumericFormats.SizeOf(e.DType)), written = 0;
        var clock = Stopwatch.StartNew();
        SafeTensorsWriter.WriteStreamed(Path.Combine(dir, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" }, (s, i) =>
        {
            produce[i](s);
            written += ShapeUtil.Numel(entries[i].Shape) * NumericFormats.SizeOf(entries[i].DType);
            progress?.Invoke(new Progress(written, total, clock.Elapsed));
        });
        if (dtype == CheckpointDType.Fp8) config["quantization_config"] = Fp8.Fp8Checkpoint.QuantizationConfig();
        // torch_dtype names the unquantised weights' type, as in DeepSeek-V3's own FP8 release.
        HfCheckpointWriter.WriteConfigs(dir, config, high);
    }
}
