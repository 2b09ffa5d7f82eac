using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Inference;

/// <summary>
/// Stores a model's Linear weights compressed for inference (BF16, or FP8 E4M3 with 128×128 block scales) and drops
/// their fp32 copies. kv_b_proj stays fp32 (absorbed attention reads W_UK/W_UV directly), as do the embedding, the
/// MoE gates and norms. FP8 applies to the Linears DeepSeek's FP8 checkpoints quantise (attention and MLP/experts);
/// the head and the MTP eh_proj stay in their stored precision. From an FP8 checkpoint the codes are taken as stored,
/// never widened to fp32 in memory, and mapped from the checkpoint file rather than copied.
/// </summary>
public static class InferenceWeights
{
    public static IEnumerable<(string Name, Linear Linear)> CompressibleLinears(DeepSeekModel model)
    {
        foreach (var (path, module) in model.NamedModules())
            if (module is Linear linear && !path.EndsWith(".kv_b_proj", StringComparison.Ordinal))
                yield return (path, linear);
    }

    /// <summary>Converts the loaded fp32 weights; returns the bytes the weights now take.</summary>
    public static long Compress(DeepSeekModel model, WeightStorage storage)
    {
        if (storage == WeightStorage.Fp32) return model.NamedParameters().Sum(p => p.Parameter.Length * 4L);
        var targets = storage == WeightStorage.Fp8Block ? Fp8.Fp8Checkpoint.Fp8Linears(model) : CompressibleLinears(model);
        foreach (var (path, linear) in targets)
        {
            if (path.EndsWith(".kv_b_proj", StringComparison.Ordinal)) continue; // absorbed attention reads it as fp32
            var w = linear.Weight;
            linear.InferenceWeight = CompressedWeight.Compress(w.Span, w.Shape[0], w.Shape[1], storage);
            w.Release();
        }
        return WeightBytes(model);
    }

    /// <summary>Bytes the weights take in memory: compressed copies plus every fp32 parameter still materialised.</summary>
    public static long WeightBytes(DeepSeekModel model) =>
        model.NamedModules().Select(m => m.Module).OfType<Linear>().Sum(l => l.InferenceWeight?.Bytes ?? 0)
        + (model.Inner.EmbedTokens.InferenceWeight?.Bytes ?? 0)
        + model.NamedParameters().Where(p => !p.Parameter.IsMeta).Sum(p => p.Parameter.Length * 4L);

    /// <summary>
    /// Loads a model for inference with <paramref name="storage"/> weights. FP8-block weights of an FP8 checkpoint
    /// are kept as stored when <paramref name="storage"/> is FP8 (a quarter of the fp32 bytes, no fp32 detour). With FP8
    /// or BF16 storage, a BF16 checkpoint's other weights (embedding, head) stay BF16 as well.
    /// </summary>
    public static DeepSeekModel Load(string dir, WeightStorage storage)
    {
        if (storage == WeightStorage.Fp32) return ModelCheckpoint.Load(dir);
        DeepSeekModel model;
        if (storage == WeightStorage.Fp8Block) model = LoadFp8Codes(dir);
        else Compress(model = ModelCheckpoint.Load(dir), storage);
        // DeepSeek's checkpoints store what they do not quantise (the embedding, the head, the MTP eh_proj) in BF16:
        // keep those as stored too (BF16 widens exactly, and an fp32 copy would be 4 bytes per weight for nothing).
        if (model.Config.TorchDtype is "bfloat16")
        {
            foreach (var (_, linear) in CompressibleLinears(model))
                if (linear.InferenceWeight is null && !linear.Weight.IsMeta) KeepAsBf16(linear.Weight, w => linear.InferenceWeight = w);
            var embedding = model.Inner.EmbedTokens;
            KeepAsBf16(embedding.Weight, w => embedding.InferenceWeight = w);
        }
        return model;
    }

    private static void KeepAsBf16(Parameter weight, Action<CompressedWeight> store)
    {
        store(CompressedWeight.Compress(weight.Span, weight.Shape[0], weight.Shape[1], WeightStorage.Bf16));
        weight.Release();
    }

    /// <summary>An FP8 checkpoint's FP8-block Linears read as codes (never widened); the other weights as fp32.</summary>
    private static DeepSeekModel LoadFp8Codes(string dir)
    {
        var config = DeepSeekConfig.Load(Path.Combine(dir, "config.json"));
        // Weights stored as FP8 blocks are read as codes below, so the fp32 load skips them.
        var fp8Names = config.QuantizationConfig is null ? [] : Fp8.Fp8Checkpoint.QuantizedWeightNames(new DeepSeekModel(config, materialize: false));
        var model = ModelCheckpoint.Load(dir, skip: n => fp8Names.Contains(n) && !n.EndsWith(".kv_b_proj.weight", StringComparison.Ordinal));
        using var reader = HfCheckpointReader.Open(dir, ModelCheckpoint.BlockSize(config));
        foreach (var (path, linear) in Fp8.Fp8Checkpoint.Fp8Linears(model))
        {
            if (path.EndsWith(".kv_b_proj", StringComparison.Ordinal)) continue; // loaded as fp32 for absorbed attention
            string name = path + ".weight";
            if (linear.Weight.IsMeta)
            {
                var shape = reader.GetShape(name);
                if (!shape.AsSpan().SequenceEqual(linear.Weight.Shape))
                    throw new DeepSeekSharpException($"{dir}: weight '{name}' has shape {ShapeUtil.Format(shape)}, the config implies {ShapeUtil.Format(linear.Weight.Shape)}");
            }
            if (linear.Weight.IsMeta && reader.IsMappableFp8Block(name))
            {
                var entry = reader.GetEntry(name);
                // Stored as F8_E4M3 [out, in], row-major: exactly the layout the kernels read, so the codes stay in the
                // file's mapping (file-backed pages the kernel can evict) instead of a copy in anonymous memory. The
                // scales are small and are copied.
                var codes = reader.MapRawBytes(name);
                var scales = new float[reader.GetEntry(name + "_scale_inv").ElementCount];
                reader.ReadFloat32(name + "_scale_inv", scales);
                linear.InferenceWeight = CompressedWeight.FromFp8Codes(entry.Shape[0], entry.Shape[1], codes, scales);
            }
            else
            {
                // Stored otherwise (high precision, E5M2, other blocks): widened on read, then quantised to 128x128 blocks.
                var w = linear.Weight;
                if (w.IsMeta)
                {
                    w.Materialize();
                    reader.ReadFloat32(name, w.Span);
                }
                linear.InferenceWeight = CompressedWeight.Compress(w.Span, w.Shape[0], w.Shape[1], WeightStorage.Fp8Block);
                w.Release();
            }
        }
        return model;
    }
}
