using System.Text.Json.Nodes;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>
/// Every bad value of a model config (HF config.json) or a training config (YAML, --set, flags), run through the real
/// CLI entry point: one line naming the file and the key, exit code 1, in bounded time and memory.
/// </summary>
[Collection(nameof(InProcessDss))]
public sealed class ConfigValidationTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); } // the test-end hook may have removed it

    private static JsonObject TinyConfig() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixture("v3-tiny"), "config.json")))!.AsObject();

    /// <summary>(key path, JSON value, text the error must hold): each breaks one rule of the v3-tiny config.</summary>
    public static TheoryData<string, string, string> BadModelValues => new()
    {
        { "rms_norm_eps", "-1e-6", "rms_norm_eps" },
        { "rms_norm_eps", "0", "rms_norm_eps" },
        { "rms_norm_eps", "\"NaN\"", "rms_norm_eps" },
        { "routed_scaling_factor", "\"NaN\"", "routed_scaling_factor" },
        { "routed_scaling_factor", "\"-Infinity\"", "routed_scaling_factor" },
        { "max_position_embeddings", "-1", "max_position_embeddings" },
        { "moe_layer_freq", "0", "moe_layer_freq" },
        { "n_shared_experts", "-3", "n_shared_experts" },
        { "n_routed_experts", "-8", "n_routed_experts" },
        { "num_hidden_layers", "-1", "num_hidden_layers" },
        { "num_nextn_predict_layers", "-1", "num_nextn_predict_layers" },
        { "num_attention_heads", "0", "num_attention_heads" },
        { "num_key_value_heads", "0", "num_key_value_heads" },
        { "kv_lora_rank", "0", "kv_lora_rank" },
        { "q_lora_rank", "-24", "q_lora_rank" },
        { "qk_rope_head_dim", "3", "qk_rope_head_dim" },
        { "qk_nope_head_dim", "-8", "qk_nope_head_dim" },
        { "v_head_dim", "0", "v_head_dim" },
        { "vocab_size", "0", "vocab_size" },
        { "hidden_size", "-32", "hidden_size" },
        { "intermediate_size", "0", "intermediate_size" },
        { "moe_intermediate_size", "0", "moe_intermediate_size" },
        { "num_experts_per_tok", "9", "num_experts_per_tok" },
        { "num_experts_per_tok", "0", "num_experts_per_tok" },
        { "n_group", "3", "n_group" },
        { "n_group", "0", "n_group" },
        { "topk_group", "5", "topk_group" },
        { "first_k_dense_replace", "-1", "first_k_dense_replace" },
        { "initializer_range", "\"NaN\"", "initializer_range" },
        { "rope_theta", "0", "rope_theta" },
        { "bos_token_id", "128", "bos_token_id" },
        { "eos_token_id", "-1", "eos_token_id" },
        { "rope_scaling.factor", "\"NaN\"", "rope_scaling.factor" },
        { "rope_scaling.original_max_position_embeddings", "0", "rope_scaling.original_max_position_embeddings" },
        { "rope_scaling.beta_fast", "\"Infinity\"", "rope_scaling.beta_fast" },
        { "rope_scaling.mscale", "-1", "rope_scaling.mscale" },
        { "quantization_config", """{"weight_block_size": [0, 128]}""", "weight_block_size" },
    };

    [Theory]
    [MemberData(nameof(BadModelValues))]
    public void BadModelConfigValueIsOneLineNamingFileAndKey(string keyPath, string json, string mustContain)
    {
        var config = TinyConfig();
        string[] path = keyPath.Split('.');
        var holder = path.Length == 1 ? config : config[path[0]]!.AsObject();
        holder[path[^1]] = JsonNode.Parse(json);
        string file = Path.Combine(_dir, "config.json");
        File.WriteAllText(file, config.ToJsonString());

        // inspect reads only the config; init and forward read it on their way to building or loading a model.
        InProcessDss.AssertOneLineError(InProcessDss.Run("inspect", "--model", _dir), file, mustContain);
        InProcessDss.AssertOneLineError(InProcessDss.Run("init", "--config", file, "--out", Path.Combine(_dir, "out")), file, mustContain);
    }

    // The size cases run in a child process under a 2 GiB heap limit, so a regression fails fast instead of taking the
    // machine's memory.
    private static readonly Dictionary<string, string> TwoGiBHeap = new() { ["DOTNET_GCHeapHardLimit"] = "0x80000000" };

    [Fact]
    public void InspectAnswersAtOnceForAnySize()
    {
        // A million layers or routed experts: the counts are closed-form, nothing is built per parameter.
        foreach (var (key, value) in new[] { ("num_hidden_layers", 1_000_000), ("n_routed_experts", 1_000_000), ("num_hidden_layers", int.MaxValue) })
        {
            var config = TinyConfig();
            config[key] = value;
            File.WriteAllText(Path.Combine(_dir, "config.json"), config.ToJsonString());
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var r = DssProcess.Run(TwoGiBHeap, TimeSpan.FromSeconds(60), "inspect", "--model", _dir, "--json");
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.True(clock.Elapsed.TotalSeconds < 15, $"{key}: {clock.Elapsed.TotalSeconds:F1} s");
            using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
            Assert.True(doc.RootElement.GetProperty("total_parameters").GetInt64() > 1_000_000_000);
        }
    }

    [Fact]
    public void AModelLargerThanMemoryIsRefusedBeforeAllocating()
    {
        // 1e6 layers of the tiny config (75 GB of fp32 weights), refused by init; 1e6 routed experts (18.8 GB of
        // weights, 9M tensors) refused by forward before the shape-only model that names its weights is built.
        string file = Path.Combine(_dir, "config.json");
        File.Copy(Path.Combine(TestPaths.Fixture("v3-tiny"), "model.safetensors"), Path.Combine(_dir, "model.safetensors"));
        foreach (var (key, command) in new[] { ("num_hidden_layers", "init"), ("n_routed_experts", "forward") })
        {
            var config = TinyConfig();
            config[key] = 1_000_000;
            File.WriteAllText(file, config.ToJsonString());
            string[] args = command == "init"
                ? ["init", "--config", file, "--out", Path.Combine(_dir, "out")]
                : ["forward", "--model", _dir, "--tokens", "1,2", "--out", Path.Combine(_dir, "o.safetensors")];
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var r = DssProcess.Run(TwoGiBHeap, TimeSpan.FromSeconds(60), args);
            DssProcess.AssertCleanError(r, file);
            Assert.Contains("more than the 2.15 GB this process may use", r.Stderr);
            Assert.True(clock.Elapsed.TotalSeconds < 15, $"{command}: {clock.Elapsed.TotalSeconds:F1} s");
        }
    }

    [Fact]
    public void SizesPastWhatTensorsAndCountsHoldAreOneLine()
    {
        // 2^30 heads overflow MLA's projection dimension; 2^31 - 1 layers of a 2^30-wide model overflow the count.
        string file = Path.Combine(_dir, "config.json");
        foreach (var (key, value, hidden, mustContain) in new[]
        {
            ("num_attention_heads", 1 << 30, 32, "num_attention_heads"), ("num_hidden_layers", int.MaxValue, (1 << 30) - 1, "64 bits"),
        })
        {
            var config = TinyConfig();
            config[key] = value;
            config["hidden_size"] = hidden;
            File.WriteAllText(file, config.ToJsonString());
            var r = DssProcess.Run(TwoGiBHeap, TimeSpan.FromSeconds(60), "inspect", "--model", _dir);
            DssProcess.AssertCleanError(r, file);
            Assert.Contains(mustContain, r.Stderr);
        }
    }

    [Fact]
    public void TheMemoryCheckAdmitsWhatFits()
    {
        // dss init writes tensor by tensor, so what must fit is its largest tensor: under a 1 GiB heap limit an
        // embedding of 1.9 GB (fp32) is refused with the config named, the preset is not.
        var config = TinyConfig();
        config["vocab_size"] = (int)(1.9e9 / 4 / config["hidden_size"]!.GetValue<int>());
        string file = Path.Combine(_dir, "config.json");
        File.WriteAllText(file, config.ToJsonString());
        var limit = new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x40000000" };
        var r = DssProcess.Run(limit, "init", "--config", file, "--out", Path.Combine(_dir, "big"));
        DssProcess.AssertCleanError(r, file);
        Assert.Contains("1.07 GB", r.Stderr);
        r = DssProcess.Run(limit, "init", "--preset", "tiny-v3", "--out", Path.Combine(_dir, "tiny"));
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    [Fact]
    public void ClosedFormCountsMatchTheBuiltModel()
    {
        // The analytic counts inspect and the memory check use, against walking a shape-only model, over configs that
        // take every branch: q LoRA or not, dense-only, MoE every other layer, no shared experts, greedy (no bias), MTP.
        var variants = new List<JsonObject>();
        foreach (var fixture in new[] { "v3-tiny", "v2-lite-tiny", "v2-group-tiny", "v3-tiny-fp8" })
            variants.Add(JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixture(fixture), "config.json")))!.AsObject());
        variants.Add(JsonNode.Parse(Presets.TinyV3)!.AsObject());
        var mutations = new (string Key, JsonNode? Value)[]
        {
            ("q_lora_rank", null), ("n_routed_experts", 0), ("moe_layer_freq", 2), ("first_k_dense_replace", 0),
            ("n_shared_experts", 0), ("num_nextn_predict_layers", 2), ("num_hidden_layers", 7),
        };
        foreach (var (key, value) in mutations)
        {
            var v = TinyConfig();
            v[key] = value?.DeepClone();
            variants.Add(v);
        }
        var greedy = TinyConfig();
        greedy["topk_method"] = "greedy";
        greedy["n_group"] = 1;
        greedy["topk_group"] = 1;
        variants.Add(greedy);
        foreach (var v in variants)
        {
            var config = DeepSeekConfig.Parse(v.ToJsonString());
            var model = new DeepSeekModel(config, materialize: false);
            Assert.Equal(ParameterCount.Of(model), ParameterCount.Of(config));
            var footprint = ModelFootprint.Of(config);
            Assert.Equal(model.NamedParameters().Count() + model.NamedBuffers().Count(), footprint.Tensors);
            Assert.Equal(model.NamedParameters().Sum(p => p.Parameter.Length) + model.NamedBuffers().Sum(b => b.Buffer.Length), footprint.Elements);
            Assert.Equal(model.NamedParameters().Max(p => p.Parameter.Length), footprint.LargestTensor);
        }
    }

    private string WriteTrainYaml(string extra)
    {
        string file = Path.Combine(_dir, "train.yaml");
        File.WriteAllText(file, $"model_preset: tiny-v3\ndatasets:\n  - {Path.Combine(_dir, "data.txt")}\noutput_dir: {Path.Combine(_dir, "run")}\n{extra}\n");
        return file;
    }

    public static TheoryData<string, string> BadTrainValues => new()
    {
        { "save_steps", "0" }, { "logging_steps", "0" }, { "eval_steps", "0" }, { "eval_batches", "-1" },
        { "threads", "100000" }, { "threads", "-1" }, { "warmup_steps", "-10" }, { "max_grad_norm", "-1" },
        { "max_grad_norm", "nan" }, { "adam_beta1", "2" }, { "adam_beta2", "1" }, { "adam_epsilon", "0" },
        { "learning_rate", "inf" }, { "min_lr_ratio", "1.5" }, { "weight_decay", "-0.1" }, { "init_std", "-1" },
        { "mtp_depth", "-2" }, { "mtp_lambda", "nan" }, { "mtp_lambda_late", "-1" }, { "mtp_lambda_switch", "2" },
        { "bias_update_speed", "-1" }, { "seq_aux_alpha", "nan" }, { "aux_loss_alpha", "-1" }, { "save_total_limit", "-1" },
        { "sample_tokens", "-1" }, { "tokenizer_vocab_size", "-1" }, { "val_set_size", "nan" }, { "sequence_len", "1" },
        { "micro_batch_size", "0" }, { "gradient_accumulation_steps", "0" }, { "max_steps", "0" },
        { "sequence_len", "2000000000" },
    };

    [Theory]
    [MemberData(nameof(BadTrainValues))]
    public void BadTrainingConfigValueIsOneLineNamingFileAndKey(string key, string value)
    {
        string file = WriteTrainYaml($"{key}: {value}");
        InProcessDss.AssertOneLineError(InProcessDss.Run("train", "--config", file), file, key);
        // The same value given by --set is reported against --set, not the file.
        string clean = WriteTrainYaml("");
        InProcessDss.AssertOneLineError(InProcessDss.Run("train", "--config", clean, "--set", $"{key}={value}"), "--set", key);
        Assert.False(Directory.Exists(Path.Combine(_dir, "run")), "nothing is written before the config is valid");
    }

    [Fact]
    public void NegativeStopAtStepIsOneLine()
    {
        string file = WriteTrainYaml("");
        InProcessDss.AssertOneLineError(InProcessDss.Run("train", "--config", file, "--stop-at-step", "-5"), "--stop-at-step", "-5");
        Assert.False(Directory.Exists(Path.Combine(_dir, "run")));
    }
}
