using System.Text.Json.Nodes;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.FineTuning.Lora;
using DeepSeekSharp.Fp8;
using DeepSeekSharp.IO.HfCheckpoint;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.FineTuning;

/// <summary>
/// <see cref="LoraMerge"/>: the merged F32 model computes what the base with its adapter on computes (attention incl.
/// kv_b_proj, dense MLP, shared and routed experts, a modules_to_save head); merged weights are W + scale·B·A summed
/// here in double; an FP8 merge loses at most half an E4M3 step of each block, reports exactly that, and copies the
/// blocks it did not change as stored.
/// </summary>
public sealed class LoraMergeTests
{
    private readonly string _dir = TestPaths.TempDir();

    /// <summary>Attention (q_a, kv_b, o), the dense MLP of layer 0, the shared experts and every routed expert's down_proj.</summary>
    internal static readonly string[] EveryKind = ["q_a_proj", "kv_b_proj", "o_proj", "layers\\.0\\.mlp\\.gate_proj", "shared_experts", "mlp.experts.*.down_proj"];

    /// <summary>
    /// Writes a PEFT adapter folder for the model at <paramref name="baseDir"/>: LoRA (r 4, α 8) on <see cref="EveryKind"/> with
    /// B uniform in ±<paramref name="bScale"/> (so the delta matters) and, with <paramref name="saveHead"/>, a changed lm_head.
    /// </summary>
    internal static LoraApplyResult WriteAdapter(string baseDir, string adapterDir, float bScale = 0.05f, bool saveHead = true, int seed = 5)
    {
        var model = ModelCheckpoint.Load(baseDir);
        var settings = new LoraSettings(4, 8, EveryKind, ModulesToSave: saveHead ? ["lm_head"] : null);
        var result = LoraAdapters.Apply(model, settings, seed);
        var rng = new Random(seed);
        foreach (var lora in result.Adapters.Values)
            for (int i = 0; i < lora.B.Length; i++) lora.B.Span[i] = (float)(rng.NextDouble() * 2 - 1) * bScale;
        if (saveHead)
        {
            var head = model.LmHead.Weight.Span;
            for (int i = 0; i < head.Length; i++) head[i] += (float)(rng.NextDouble() * 2 - 1) * 0.01f;
        }
        Directory.CreateDirectory(adapterDir);
        LoraAdapters.WriteFiles(model, adapterDir, settings, baseDir);
        return result;
    }

    private static float[] Logits(DeepSeekModel model, int[] tokens)
    {
        using var _ = GradMode.NoGrad();
        return model.Forward(tokens, SequenceBatch.Training(1, tokens.Length)).Logits.Span.ToArray();
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    private static double MaxMagnitude(float[] a) => a.Max(v => Math.Abs((double)v));

    /// <summary>W + scale·B·A [out, in] in double, from the adapter's own tensors.</summary>
    private static double[] ExactMerged(float[] w, LoraLinear lora)
    {
        int r = lora.Rank, inF = lora.A.Shape[1], outF = lora.B.Shape[0];
        var merged = new double[w.Length];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
            {
                double delta = 0;
                for (int k = 0; k < r; k++) delta += (double)lora.B.Data[o * r + k] * lora.A.Data[k * inF + i];
                merged[o * inF + i] = w[o * inF + i] + lora.Scale * delta;
            }
        return merged;
    }

    private string BaseWithTokenizer()
    {
        string dir = Path.Combine(_dir, "base");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestPaths.Fixture("v3-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        ByteTokenizer.SaveAsHfJson(Path.Combine(dir, "tokenizer.json"));
        return dir;
    }

    [Fact]
    public void MergedF32ModelComputesWhatTheAdapterOnModelComputes()
    {
        string baseDir = BaseWithTokenizer(), adapterDir = Path.Combine(_dir, "adapter"), outDir = Path.Combine(_dir, "merged");
        WriteAdapter(baseDir, adapterDir);
        var report = LoraMerge.Merge(baseDir, adapterDir, outDir);

        var adapted = ModelCheckpoint.Load(baseDir);
        var adapters = LoraAdapters.Load(adapted, adapterDir);
        Assert.Contains(adapters.Adapters.Keys, k => k.Contains("mlp.experts.", StringComparison.Ordinal));
        Assert.Contains(adapters.Adapters.Keys, k => k.EndsWith("shared_experts.up_proj", StringComparison.Ordinal));
        Assert.Contains("model.layers.0.mlp.gate_proj", adapters.Adapters.Keys);
        Assert.Equal(CheckpointDType.F32, report.Weights);
        Assert.Equal(adapters.Adapters.Count, report.MergedLinears);
        Assert.Equal(1, report.ReplacedTensors);
        Assert.Equal(0, report.MaxStoredError);
        Assert.Equal(LoraMerge.DefaultProbeTokens, report.ProbeTokens);

        // The folder is a complete model folder: it loads, and carries the base's tokenizer.
        var merged = ModelCheckpoint.Load(outDir);
        Assert.Equal(File.ReadAllBytes(Path.Combine(baseDir, "tokenizer.json")), File.ReadAllBytes(Path.Combine(outDir, "tokenizer.json")));
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!["quantization_config"]);
        Assert.DoesNotContain(merged.NamedParameters(), p => p.Name.Contains("lora_", StringComparison.Ordinal));

        // Every merged weight is W + scale·B·A; the head is the adapter's.
        var mergedParams = merged.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        var baseModel = ModelCheckpoint.Load(baseDir);
        var baseParams = baseModel.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        foreach (var (path, lora) in adapters.Adapters)
        {
            var exact = ExactMerged(baseParams[path + ".weight"].Span.ToArray(), lora);
            var stored = mergedParams[path + ".weight"].Span.ToArray();
            for (int i = 0; i < exact.Length; i++) Assert.True(Math.Abs(stored[i] - exact[i]) <= 1e-6 * (1 + Math.Abs(exact[i])), $"{path}[{i}]: {stored[i]} vs {exact[i]}");
        }
        Assert.Equal(adapted.LmHead.Weight.Span.ToArray(), merged.LmHead.Weight.Span.ToArray());
        Assert.NotEqual(baseModel.LmHead.Weight.Span.ToArray(), merged.LmHead.Weight.Span.ToArray());

        int[] tokens = [5, 8, 13, 21, 34, 55, 1, 2, 99, 3, 64, 7];
        float[] expected = Logits(adapted, tokens), actual = Logits(merged, tokens), plain = Logits(baseModel, tokens);
        double scale = MaxMagnitude(expected);
        Assert.True(MaxDifference(expected, actual) <= 1e-5 * scale, $"merged vs adapter on: {MaxDifference(expected, actual)} (scale {scale})");
        Assert.True(MaxDifference(expected, plain) > 1e-2 * scale, $"the adapter hardly changes the logits: {MaxDifference(expected, plain)}");
        Assert.True(report.MaxLogitDifference <= 1e-5 * report.LogitScale, $"reported {report.MaxLogitDifference} (scale {report.LogitScale})");
        Assert.Equal(MaxMagnitude(Logits(adapted, LoraMerge.ProbeIds(baseDir, adapted.Config, 64))), report.LogitScale, 5);
    }

    [Fact]
    public void Fp8BaseStaysFp8AndTheReportedErrorIsWhatRequantisationLostWithinHalfAStep()
    {
        string fp8Base = Path.Combine(_dir, "base-fp8"), adapterDir = Path.Combine(_dir, "adapter"), outDir = Path.Combine(_dir, "merged-fp8");
        Fp8Checkpoint.Quantize(TestPaths.Fixture("v3-tiny"), fp8Base);
        WriteAdapter(fp8Base, adapterDir, bScale: 0.2f);
        var report = LoraMerge.Merge(fp8Base, adapterDir, outDir);
        Assert.Equal(CheckpointDType.Fp8, report.Weights);
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!["quantization_config"]);

        var adapted = ModelCheckpoint.Load(fp8Base);
        var adapters = LoraAdapters.Load(adapted, adapterDir);
        var baseParams = ModelCheckpoint.Load(fp8Base).NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        var merged = ModelCheckpoint.Load(outDir);
        var mergedParams = merged.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        using var mergedReader = HfCheckpointReader.Open(outDir, (128, 128));
        using var baseReader = HfCheckpointReader.Open(fp8Base, (128, 128));
        double maxError = 0;
        foreach (var (path, lora) in adapters.Adapters)
        {
            string name = path + ".weight";
            var exact = ExactMerged(baseParams[name].Span.ToArray(), lora);
            var stored = mergedParams[name].Span.ToArray();
            Assert.True(mergedReader.IsFp8Block(name), name);
            var scales = new float[mergedReader.GetEntry(name + "_scale_inv").ElementCount];
            mergedReader.ReadFloat32(name + "_scale_inv", scales);
            int cols = lora.A.Shape[1], scaleCols = (cols + 127) / 128;
            for (int i = 0; i < exact.Length; i++)
            {
                double error = Math.Abs(stored[i] - exact[i]);
                // E4M3's widest step is 32 (between 256 and 448) in units of the block scale s = amax/448: rounding loses ≤ 16·s.
                double step = scales[i / cols / 128 * scaleCols + i % cols / 128];
                Assert.True(error <= 16 * step * (1 + 1e-5), $"{name}[{i}]: error {error} beyond half a step of {32 * step}");
                maxError = Math.Max(maxError, error);
            }
        }
        Assert.True(maxError > 0);
        Assert.Equal(maxError, report.MaxStoredError, maxError * 1e-3);

        // Blocks the adapter did not touch are the base's codes and scales, byte for byte.
        foreach (var name in Fp8Checkpoint.QuantizedWeightNames(merged).Where(n => !adapters.Adapters.ContainsKey(n[..^".weight".Length])))
        {
            Assert.Equal(baseReader.ReadRawBytes(name), mergedReader.ReadRawBytes(name));
            Assert.Equal(baseReader.ReadRawBytes(name + "_scale_inv"), mergedReader.ReadRawBytes(name + "_scale_inv"));
        }

        // The logit difference is reported, is what requantisation costs on the probe, and is small against the logits.
        var probe = LoraMerge.ProbeIds(fp8Base, adapted.Config, 64);
        double difference = MaxDifference(Logits(adapted, probe), Logits(merged, probe));
        Assert.Equal(difference, report.MaxLogitDifference, difference * 1e-4);
        // Requantising the adapted blocks costs less than quantising the whole fp32 base did (measured: 1.22 against 2.40, logits up to 6.0).
        double baseCost = MaxDifference(Logits(ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")), probe), Logits(ModelCheckpoint.Load(fp8Base), probe));
        Assert.InRange(report.MaxLogitDifference, 1e-6 * report.LogitScale, baseCost);
    }

    [Fact]
    public void Bf16MergeLosesAtMostHalfABf16StepAndSaysSo()
    {
        string adapterDir = Path.Combine(_dir, "adapter"), outDir = Path.Combine(_dir, "merged-bf16");
        WriteAdapter(TestPaths.Fixture("v3-tiny"), adapterDir);
        var report = LoraMerge.Merge(TestPaths.Fixture("v3-tiny"), adapterDir, outDir, CheckpointDType.Bf16, probeTokens: 16);
        Assert.Equal(CheckpointDType.Bf16, report.Weights);
        Assert.Equal(16, report.ProbeTokens);
        Assert.Equal("bfloat16", JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!["torch_dtype"]!.GetValue<string>());
        // BF16 keeps 8 significant bits: rounding to nearest loses at most half a step, 2^-8 of a value.
        Assert.InRange(report.MaxStoredError, 1e-9, report.MaxWeight * Math.Pow(2, -8));
        // The reported logit difference is the adapter-on fp32 model's against the merged folder loaded back. (On this random
        // MoE it is large: BF16 rounding flips some top-k expert choices, as it does for the base alone.)
        var adapted = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        LoraAdapters.Load(adapted, adapterDir);
        var probe = LoraMerge.ProbeIds(TestPaths.Fixture("v3-tiny"), adapted.Config, 16);
        double difference = MaxDifference(Logits(adapted, probe), Logits(ModelCheckpoint.Load(outDir), probe));
        Assert.True(difference > 0);
        Assert.Equal(difference, report.MaxLogitDifference, difference * 1e-4);
    }

    [Fact]
    public void TheProbeIsTextThroughTheBasesTokenizerOrFixedIdsWithoutOne()
    {
        var config = DeepSeekConfig.Parse(Presets.TinyV3);
        string withTokenizer = Path.Combine(_dir, "with-tokenizer");
        Directory.CreateDirectory(withTokenizer);
        ByteTokenizer.SaveAsHfJson(Path.Combine(withTokenizer, "tokenizer.json"));
        var probe = LoraMerge.ProbeIds(withTokenizer, config, 64);
        Assert.Equal(64, probe.Length);
        Assert.StartsWith("The river rose in the spring", new ByteTokenizer().Decode(probe));
        // No tokenizer (or ids the vocabulary lacks: v3-tiny has 128): fixed ids, the same every run; never past the context.
        Assert.Equal(Enumerable.Range(0, 64).Select(i => (i * 7919 + 13) % 128), LoraMerge.ProbeIds(TestPaths.Fixture("v3-tiny"), DeepSeekConfig.Load(Path.Combine(TestPaths.Fixture("v3-tiny"), "config.json")), 100));
        Assert.Empty(LoraMerge.ProbeIds(withTokenizer, config, 0));
    }

    [Fact]
    public void TheOutputIsNeverAnInputAndAnExistingFolderNeedsOverwrite()
    {
        string adapterDir = Path.Combine(_dir, "adapter"), outDir = Path.Combine(_dir, "merged");
        WriteAdapter(TestPaths.Fixture("v3-tiny"), adapterDir, saveHead: false);
        var e = Assert.Throws<DeepSeekSharpException>(() => LoraMerge.Merge(TestPaths.Fixture("v3-tiny"), adapterDir, adapterDir, probeTokens: 0));
        Assert.Contains("is (or holds) the input", e.Message);
        LoraMerge.Merge(TestPaths.Fixture("v3-tiny"), adapterDir, outDir, probeTokens: 0);
        e = Assert.Throws<DeepSeekSharpException>(() => LoraMerge.Merge(TestPaths.Fixture("v3-tiny"), adapterDir, outDir, probeTokens: 0));
        Assert.Contains("--overwrite", e.Message);
        var report = LoraMerge.Merge(TestPaths.Fixture("v3-tiny"), adapterDir, outDir, overwrite: true, probeTokens: 0);
        Assert.Equal(0, report.ProbeTokens);
        Assert.Empty(Directory.GetDirectories(_dir, ".merged*"));
    }
}
