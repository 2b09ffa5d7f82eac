using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace DeepSeekSharp.Rl;

/// <summary>
/// A GRPO run (<c>dss rl --config F.yaml</c>), with TRL's GRPOConfig names where the concept is the same and
/// Axolotl's LoRA keys. Prompts come from a GSM8K-form JSONL dataset (question, answer ending in <c>#### N</c>), rendered
/// with the chat template as one user turn.
/// </summary>
public sealed class GrpoConfig
{
    /// <summary>The SFT'd model to improve (an HF folder with tokenizer.json).</summary>
    public string BaseModel { get; set; } = "";
    /// <summary>Prompts: GSM8K-form JSONL (question, answer).</summary>
    public string Dataset { get; set; } = "";
    /// <summary>Held-out problems scored before and after (greedy decoding, GSM8K's answer rule); empty: none.</summary>
    public string TestDataset { get; set; } = "";
    /// <summary>At most this many test problems (0: all).</summary>
    public int EvalLimit { get; set; } = 200;
    public string ChatTemplate { get; set; } = "deepseek_v3";
    public string OutputDir { get; set; } = "runs/grpo";

    /// <summary>G: completions sampled per prompt.</summary>
    public int NumGenerations { get; set; } = 8;
    /// <summary>Prompts per optimizer step (TRL: generation batch / G).</summary>
    public int PromptsPerStep { get; set; } = 4;
    /// <summary>Completions per forward/backward (memory); the step's gradient is the same for any value.</summary>
    public int MicroBatchSize { get; set; } = 8;
    public int MaxCompletionLength { get; set; } = 64;
    public float Temperature { get; set; } = 1f;
    public float TopP { get; set; } = 1f;
    public int TopK { get; set; }
    /// <summary>μ: optimizer passes over each batch of rollouts (ratios leave 1 from the second on).</summary>
    public int NumIterations { get; set; } = 1;
    public float Beta { get; set; }
    public float Epsilon { get; set; } = 0.2f;
    public float? EpsilonHigh { get; set; }
    public string LossType { get; set; } = "dapo";
    public string ScaleRewards { get; set; } = "group";
    public List<string> RewardFuncs { get; set; } = ["accuracy"];
    public List<float>? RewardWeights { get; set; }

    public int MaxSteps { get; set; } = 50;
    public float LearningRate { get; set; } = 1e-5f;
    public string LrScheduler { get; set; } = "constant";
    public int WarmupSteps { get; set; }
    public float WeightDecay { get; set; }
    public float MaxGradNorm { get; set; } = 1f;
    public float AdamBeta1 { get; set; } = 0.9f;
    public float AdamBeta2 { get; set; } = 0.99f;
    public int LoggingSteps { get; set; } = 1;
    public int SaveSteps { get; set; }
    public int Seed { get; set; } = 1;

    /// <summary><c>lora</c>: the policy is an adapter on the frozen base, and the reference is the base itself.</summary>
    public string? Adapter { get; set; }
    public int LoraR { get; set; } = 8;
    public float LoraAlpha { get; set; } = 16;
    public List<string> LoraTargetModules { get; set; } = [];
    public bool LoraTargetLinear { get; set; }

    public GrpoLossType Loss => LossType switch
    {
        "grpo" => GrpoLossType.Grpo,
        "bnpo" => GrpoLossType.Bnpo,
        "dr_grpo" => GrpoLossType.DrGrpo,
        "dapo" => GrpoLossType.Dapo,
        _ => throw new DeepSeekSharpException($"loss_type: '{LossType}' is not one of grpo, bnpo, dr_grpo, dapo"),
    };

    public RewardScaling Scaling => ScaleRewards switch
    {
        "group" or "true" or "True" => RewardScaling.Group,
        "batch" => RewardScaling.Batch,
        "none" or "false" or "False" => RewardScaling.None,
        _ => throw new DeepSeekSharpException($"scale_rewards: '{ScaleRewards}' is not one of group, batch, none"),
    };

    public GrpoSettings Settings => new(Beta, Epsilon, EpsilonHigh, Loss, MaxCompletionLength);

    /// <summary>Reads the YAML file, then <c>key=value</c> overrides; unknown keys and bad values are one line naming the file.</summary>
    public static GrpoConfig Load(string? path, IEnumerable<string> overrides)
    {
        string source = path ?? "--set";
        var root = new YamlMappingNode();
        try
        {
            if (path is not null)
            {
                var file = new YamlStream();
                file.Load(new StringReader(IO.InputFile.ReadAllText(path, "config file")));
                if (file.Documents.Count > 0)
                    root = file.Documents[0].RootNode as YamlMappingNode ?? throw new DeepSeekSharpException($"{path}: expected a mapping of keys at the top level");
            }
            foreach (var o in overrides)
            {
                int eq = o.IndexOf('=');
                if (eq <= 0) throw new DeepSeekSharpException($"--set '{o}': expected key=value");
                var value = new YamlStream();
                try { value.Load(new StringReader(o[(eq + 1)..])); }
                catch (YamlException e) { throw new DeepSeekSharpException($"--set '{o}': {e.Message.Split('\n')[0]}"); }
                root.Children[new YamlScalarNode(o[..eq].Trim())] = value.Documents.Count > 0 ? value.Documents[0].RootNode : new YamlScalarNode("");
            }
            var text = new StringWriter();
            new YamlStream(new YamlDocument(root)).Save(text, assignAnchors: false);
            var cfg = new DeserializerBuilder().WithNamingConvention(UnderscoredNamingConvention.Instance).Build()
                .Deserialize<GrpoConfig?>(text.ToString()) ?? new GrpoConfig();
            cfg.Validate(source);
            return cfg;
        }
        catch (YamlException e)
        {
            string problem = (e.InnerException ?? e).Message.Split('\n')[0];
            throw new DeepSeekSharpException($"{source}: {problem}");
        }
    }

    private void Validate(string source)
    {
        void Require(bool ok, string key, string problem) { if (!ok) throw new DeepSeekSharpException($"{source}: {key}: {problem}"); }
        Require(BaseModel.Length > 0, "base_model", "required (the SFT'd model folder)");
        Require(Dataset.Length > 0, "dataset", "required (GSM8K-form JSONL prompts)");
        Require(NumGenerations >= 2, "num_generations", $"must be at least 2 (got {NumGenerations})");
        Require(PromptsPerStep >= 1, "prompts_per_step", $"must be at least 1 (got {PromptsPerStep})");
        Require(MicroBatchSize >= 1, "micro_batch_size", $"must be at least 1 (got {MicroBatchSize})");
        Require(MaxCompletionLength >= 1, "max_completion_length", $"must be at least 1 (got {MaxCompletionLength})");
        Require(Temperature > 0 && float.IsFinite(Temperature), "temperature", $"must be > 0 (got {Temperature.ToString(CultureInfo.InvariantCulture)})");
        Require(TopP > 0 && TopP <= 1, "top_p", "must be in (0, 1]");
        Require(NumIterations >= 1, "num_iterations", $"must be at least 1 (got {NumIterations})");
        Require(Beta >= 0, "beta", "must be ≥ 0");
        Require(Epsilon > 0 && Epsilon < 1, "epsilon", "must be in (0, 1)");
        Require(EpsilonHigh is null or > 0, "epsilon_high", "must be > 0");
        Require(MaxSteps >= 1, "max_steps", $"must be at least 1 (got {MaxSteps})");
        Require(LearningRate > 0, "learning_rate", "must be > 0");
        Require(Adapter is null or "lora", "adapter", $"must be lora or unset (got '{Adapter}')");
        Require(RewardWeights is null || RewardWeights.Count == RewardFuncs.Count, "reward_weights", $"{RewardWeights?.Count} weights for {RewardFuncs.Count} reward functions");
        _ = Loss;
        _ = Scaling;
    }
}
