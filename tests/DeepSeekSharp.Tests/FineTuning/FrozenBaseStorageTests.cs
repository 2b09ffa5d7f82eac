using DeepSeekSharp.Autograd;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Training;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// <c>base_model_precision</c>: a LoRA run over a base kept as FP8 codes or BF16 bits trains as the same run over the
/// same values widened to fp32 (only the GEMMs' summation order differs), without fp32 copies of the frozen Linears.
/// </summary>
public sealed class FrozenBaseStorageTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private string BaseModel() => TinyRun.BaseCheckpoint(_dir);

    private string[] Lora(string baseModel, string output, params string[] extra) =>
        TinyRun.Settings(TinyRun.Corpus(_dir), output, ["model_preset=null", $"base_model={baseModel}", "adapter=lora", "lora_r=4", "lora_alpha=8",
            "lora_target_linear=true", "learning_rate=1e-2", "max_steps=3", "save_steps=3", .. extra]);

    private static double[] Losses(string output) =>
        File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
            .Where(r => r.GetProperty("kind").GetString() == "train").Select(r => r.GetProperty("loss").GetDouble()).ToArray();

    private static void AssertSameRun(string a, string b)
    {
        double[] la = Losses(a), lb = Losses(b);
        Assert.Equal(3, la.Length);
        for (int i = 0; i < la.Length; i++) Assert.True(Math.Abs(la[i] - lb[i]) < 1e-4 * Math.Abs(la[i]), $"step {i + 1}: loss {la[i]} vs {lb[i]}");
        using var ra = SafeTensorsReader.Open(Path.Combine(a, "checkpoint-3", "adapter_model.safetensors"));
        using var rb = SafeTensorsReader.Open(Path.Combine(b, "checkpoint-3", "adapter_model.safetensors"));
        foreach (var t in ra.Tensors)
        {
            float[] x = ra.ReadFloat32(t.Name), y = rb.ReadFloat32(t.Name);
            double scale = x.Max(v => Math.Abs(v)) + 1e-6;
            for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) <= 2e-3 * scale, $"{t.Name}[{i}]: {x[i]} vs {y[i]}");
        }
    }

    [Fact]
    public void LoraOverAnFp8BaseKeptAsCodesTrainsAsOverItsDequantisedValues()
    {
        string fp32 = BaseModel(), fp8 = Path.Combine(_dir, "fp8"), widened = Path.Combine(_dir, "widened");
        Fp8Checkpoint.Quantize(fp32, fp8);
        Fp8Checkpoint.Dequantize(fp8, widened, DType.F32);
        string onCodes = Path.Combine(_dir, "on-codes"), onFp32 = Path.Combine(_dir, "on-fp32");
        var logs = new List<string>();
        TinyRun.Train(Lora(fp8, onCodes), log: logs.Add);   // auto: an FP8 checkpoint stays FP8
        TinyRun.Train(Lora(widened, onFp32));
        Assert.Contains(logs, l => l.Contains("frozen Linears kept as FP8 blocks"));
        Assert.Contains(logs, l => l.Contains("FP8 codes mapped from the checkpoint files"));
        AssertSameRun(onCodes, onFp32);
    }

    /// <summary>LoRA losses and adapter gradients over <paramref name="model"/>'s base, for 3 SGD steps on the adapters.</summary>
    private static List<float[]> LoraSteps(DeepSeekModel model)
    {
        var lora = DeepSeekSharp.FineTuning.Lora.LoraAdapters.Apply(model, new DeepSeekSharp.FineTuning.Lora.LoraSettings(4, 8, [], TargetLinear: true), seed: 1);
        int[] tokens = [.. Enumerable.Range(0, 32).Select(i => (i * 37 + 11) % model.Config.VocabSize)];
        var batch = SequenceBatch.Training(1, tokens.Length);
        long[] divisors = DeepSeekSharp.Training.LanguageModelLoss.CountTargets(tokens, batch, 0);
        var trace = new List<float[]>();
        for (int step = 0; step < 3; step++)
        {
            var loss = DeepSeekSharp.Training.LanguageModelLoss.Compute(model, tokens, batch, 0, 0, divisors: divisors).Total;
            Backprop.Backward(loss);
            trace.Add([loss.Data[0]]);
            foreach (var (_, adapter) in lora.Adapters.OrderBy(a => a.Key, StringComparer.Ordinal))
                foreach (var p in new[] { adapter.A, adapter.B })
                {
                    // An expert no token chose has no gradient (the same in both runs).
                    if (p.Grad is not { } g) { trace.Add([]); continue; }
                    trace.Add(g.ToArray());
                    for (int i = 0; i < g.Length; i++) p.Span[i] -= 1e-2f * g[i];
                    p.Grad = null;
                }
        }
        return trace;
    }

    [Fact]
    public void AnFp8BasesCodesAreMappedFromTheCheckpointAndTrainAsACopyOfThemBitForBit()
    {
        string fp8 = Path.Combine(_dir, "fp8");
        Fp8Checkpoint.Quantize(BaseModel(), fp8);
        var mapped = DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block);
        // The readers that mapped the files are disposed by now: the weights alone keep the mappings alive.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var linears = Fp8Checkpoint.Fp8Linears(mapped).Where(l => !l.Path.EndsWith(".kv_b_proj", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(linears);
        using (var reader = DeepSeekSharp.IO.HfCheckpoint.HfCheckpointReader.Open(fp8, (128, 128)))
            foreach (var (path, linear) in linears)
            {
                var w = linear.InferenceWeight!;
                Assert.True(w.IsMapped, path);
                Assert.True(reader.GetEntry(path + ".weight").DType == DType.F8E4M3, path);
                Assert.True(w.Codes.Span.SequenceEqual(reader.ReadRawBytes(path + ".weight")), $"{path}: mapped codes differ from the file's");
            }
        Assert.Equal(linears.Sum(l => (long)l.Linear.OutFeatures * l.Linear.InFeatures), DeepSeekSharp.FineTuning.FrozenBaseStorage.MappedBytes(mapped));

        // The same base with its codes copied into arrays (as before mapping): the same losses and gradients, bit for bit.
        var copied = DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block);
        foreach (var (_, linear) in Fp8Checkpoint.Fp8Linears(copied))
            if (linear.InferenceWeight is { IsMapped: true } w)
                linear.InferenceWeight = CompressedWeight.FromFp8Codes(w.Rows, w.Cols, w.Codes.ToArray(), w.Scales!);
        Assert.Equal(0, DeepSeekSharp.FineTuning.FrozenBaseStorage.MappedBytes(copied));
        var want = LoraSteps(copied);
        var got = LoraSteps(mapped);
        Assert.Contains(got, g => g.Length > 1 && g.Any(v => v != 0));
        Assert.NotEqual(got[0][0], got[^1].Length == 1 ? float.NaN : got.Last(g => g.Length == 1)[0]);   // the adapters learn
        Assert.Equal(want.Count, got.Count);
        for (int i = 0; i < want.Count; i++) Assert.Equal(want[i], got[i]);
    }

    [Fact]
    public void LoraOverABf16BaseKeptAsBitsTrainsAsOverItsWidenedValues()
    {
        string fp32 = BaseModel(), bf16 = Path.Combine(_dir, "bf16");
        ModelCheckpoint.Save(ModelCheckpoint.Load(fp32), bf16, DType.BF16);
        foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json" })
            if (File.Exists(Path.Combine(fp32, file))) File.Copy(Path.Combine(fp32, file), Path.Combine(bf16, file));
        string onBits = Path.Combine(_dir, "on-bits"), onFp32 = Path.Combine(_dir, "on-fp32");
        TinyRun.Train(Lora(bf16, onBits));                                  // auto: a BF16 checkpoint stays BF16
        TinyRun.Train(Lora(bf16, onFp32, "base_model_precision=fp32"));
        AssertSameRun(onBits, onFp32);
    }

    [Fact]
    public void FrozenLinearsHoldNoFp32CopyAndTrainedOnesAreWidened()
    {
        string fp8 = Path.Combine(_dir, "fp8");
        Fp8Checkpoint.Quantize(BaseModel(), fp8);
        var model = DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block);
        var linears = Fp8Checkpoint.Fp8Linears(model).Where(l => !l.Path.EndsWith(".kv_b_proj", StringComparison.Ordinal)).ToList();
        Assert.All(linears, l => Assert.True(l.Linear.Weight.IsMeta && l.Linear.InferenceWeight is { Storage: WeightStorage.Fp8Block }, l.Path));
        var (path, trained) = linears[0];
        foreach (var (_, p) in model.NamedParameters()) p.RequiresGrad = false;
        trained.Weight.RequiresGrad = true;
        float[] expected = trained.InferenceWeight!.Decompress();
        Assert.Equal([path + ".weight"], DeepSeekSharp.FineTuning.FrozenBaseStorage.WidenTrainable(model));
        Assert.Null(trained.InferenceWeight);
        Assert.Equal(expected, trained.Weight.Span.ToArray());
    }

    [Fact]
    public void ATrainedEmbeddingIsWidenedFromItsBf16Copy()
    {
        string fp8 = TestPaths.TempDir();
        DeepSeekSharp.IO.HfCheckpoint.RandomCheckpointWriter.Write(fp8, Presets.TinyV3, DeepSeekSharp.IO.HfCheckpoint.CheckpointDType.Fp8, seed: 3);
        var model = DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block);
        foreach (var (_, p) in model.NamedParameters()) p.RequiresGrad = false;
        var embedding = model.Inner.EmbedTokens;
        embedding.Weight.RequiresGrad = true;
        float[] stored = embedding.InferenceWeight!.Decompress();
        Assert.Contains("model.embed_tokens.weight", DeepSeekSharp.FineTuning.FrozenBaseStorage.WidenTrainable(model));
        Assert.Null(embedding.InferenceWeight);
        Assert.Equal(stored, embedding.Weight.Span.ToArray());
    }

    [Fact]
    public void ResumingALoraRunThatTrainsAWholeLinearOverAnFp8BaseIsExact()
    {
        // lora_modules_to_save=[o_proj]: o_proj is stored as FP8 codes in the base and trained in fp32. Resuming reads it
        // from the adapter file, so it must come back in fp32 with the saved values (not the base's codes).
        string fp8 = Path.Combine(_dir, "fp8");
        Fp8Checkpoint.Quantize(BaseModel(), fp8);
        string straight = Path.Combine(_dir, "straight"), split = Path.Combine(_dir, "split");
        string[] settings(string output) => Lora(fp8, output, "lora_target_linear=false", "lora_target_modules=[q_a_proj, kv_b_proj]",
            "lora_modules_to_save=[o_proj]", "max_steps=4", "save_steps=4");
        TinyRun.Train(settings(straight));
        TinyRun.Train(settings(split), new DeepSeekSharp.Training.TrainOptions(StopAtStep: 2));
        TinyRun.Train(settings(split), new DeepSeekSharp.Training.TrainOptions(ResumeDir: split));
        using (var adapter = SafeTensorsReader.Open(Path.Combine(straight, "checkpoint-4", "adapter_model.safetensors")))
            Assert.Contains(adapter.Tensors, t => t.Name.EndsWith(".self_attn.o_proj.weight", StringComparison.Ordinal));
        foreach (var file in new[] { "adapter_model.safetensors", "optimizer.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(straight, "checkpoint-4", file)), File.ReadAllBytes(Path.Combine(split, "checkpoint-4", file)));
    }

    [Fact]
    public void AnAdapterThatReplacesACompressedLinearKeepsItCompressedForInference()
    {
        // The same adapter on an FP8 base for inference: o_proj is read from the adapter and compressed again as FP8.
        string fp8 = Path.Combine(_dir, "fp8"), run = Path.Combine(_dir, "run");
        Fp8Checkpoint.Quantize(BaseModel(), fp8);
        TinyRun.Train(Lora(fp8, run, "lora_target_linear=false", "lora_target_modules=[q_a_proj]", "lora_modules_to_save=[o_proj]"));
        var model = DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block);
        var result = DeepSeekSharp.FineTuning.Lora.LoraInference.Attach(model, Path.Combine(run, "checkpoint-3"));
        Assert.Equal(model.Config.NumHiddenLayers + model.Config.NumNextnPredictLayers, result.WidenedFromCompressed.Count);   // every o_proj, the MTP modules' too
        using var adapter = SafeTensorsReader.Open(Path.Combine(run, "checkpoint-3", "adapter_model.safetensors"));
        var oProj = model.Layers[0].SelfAttn.OProj;
        Assert.True(oProj.Weight.IsMeta);
        Assert.Equal(WeightStorage.Fp8Block, oProj.InferenceWeight!.Storage);
        float[] saved = adapter.ReadFloat32("base_model.model.model.layers.0.self_attn.o_proj.weight");
        var requantised = CompressedWeight.Compress(saved, oProj.OutFeatures, oProj.InFeatures, WeightStorage.Fp8Block);
        Assert.NotEqual(Fp8Checkpoint.Fp8Linears(DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block)).First(l => l.Path == "model.layers.0.self_attn.o_proj").Linear.InferenceWeight!.Decompress(),
            oProj.InferenceWeight.Decompress());                                    // the trained weight, not the base's
        Assert.Equal(requantised.Decompress(), oProj.InferenceWeight.Decompress());
    }

    [Fact]
    public void AnFp8CheckpointsBf16HeadAndEmbeddingStayBf16()
    {
        string fp8 = TestPaths.TempDir();
        DeepSeekSharp.IO.HfCheckpoint.RandomCheckpointWriter.Write(fp8, Presets.TinyV3, DeepSeekSharp.IO.HfCheckpoint.CheckpointDType.Fp8, seed: 3);
        var model = DeepSeekSharp.FineTuning.FrozenBaseStorage.Load(fp8, WeightStorage.Fp8Block);
        Assert.True(model.LmHead.Weight.IsMeta);
        Assert.Equal(WeightStorage.Bf16, model.LmHead.InferenceWeight!.Storage);
        // Exactly the stored values: the widened head equals the checkpoint's head read as fp32.
        var widened = ModelCheckpoint.Load(fp8);
        Assert.Equal(widened.LmHead.Weight.Span.ToArray(), model.LmHead.InferenceWeight.Decompress());
        // The embedding too: no fp32 table, and a lookup gives the stored rows exactly.
        var embedding = model.Inner.EmbedTokens;
        Assert.True(embedding.Weight.IsMeta);
        Assert.Equal(WeightStorage.Bf16, embedding.InferenceWeight!.Storage);
        int[] ids = [0, 5, model.Config.VocabSize - 1, 5];
        Assert.Equal(widened.Inner.EmbedTokens.Forward(ids).Span.ToArray(), embedding.Forward(ids).Span.ToArray());
        Assert.Throws<DeepSeekSharpException>(() => embedding.Forward([model.Config.VocabSize]));
    }

    [Fact]
    public void BaseModelPrecisionWithoutAnAdapterIsOneClearLine()
    {
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => DeepSeekSharp.Training.TrainConfig.Load(null, ["datasets=x.txt", "base_model=b", "base_model_precision=fp8"]));
        Assert.Contains("base_model_precision", e.Message);
        e = Assert.ThrowsAny<DeepSeekSharpException>(() => DeepSeekSharp.Training.TrainConfig.Load(null, ["datasets=x.txt", "base_model_precision=fp4"]));
        Assert.Contains("fp4", e.Message);
    }
}
