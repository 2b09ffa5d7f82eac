using System.Text.Json;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Distillation;

/// <summary>The tiny distillation runs the training tests share: four prompt/answer examples and a tiny-v3 student.</summary>
internal static class KdRun
{
    /// <summary>
    /// Writes the run's data and config into <paramref name="dir"/>: one micro-batch of four 32-token rows per step, or
    /// with <paramref name="packed"/> the four examples packed two to a 64-token row (documents share rows), two rows per
    /// micro-batch. Every step sees the same batch.
    /// </summary>
    public static string Config(string dir, string output, string distillation, int steps, bool packed = false)
    {
        string data = Path.Combine(dir, "qa.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 4).Select(i => JsonSerializer.Serialize(new
        {
            segments = new object[] { new { text = $"Q{i}: what?\n", label = false }, new { text = $"A: number {i * 7}\n", label = true } },
        })));
        string path = Path.Combine(dir, Path.GetFileName(output) + ".yaml");
        string rows = packed ? "sequence_len: 64\nsample_packing: true\nmicro_batch_size: 2" : "sequence_len: 32\nmicro_batch_size: 4";
        File.WriteAllText(path, $"""
            model_preset: tiny-v3
            tokenizer: byte
            datasets:
              - path: {data}
                type: input_output
            val_set_size: 0
            max_steps: {steps}
            warmup_steps: 0
            learning_rate: 3e-3
            eval_steps: 1000
            eval_batches: 0
            sample_tokens: 0
            logging_steps: 1
            save_steps: 1000
            mtp_lambda: 0
            seed: 5
            threads: 1
            output_dir: {output}
            distillation: {distillation}

            """ + rows + "\n");
        return path;
    }

    public static double[] Losses(string output) =>
        File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(r => r.GetProperty("kind").GetString() == "train").Select(r => r.GetProperty("loss").GetDouble()).ToArray();

    public static void Train(string config) =>
        Trainer.Run(TrainConfig.Load(config, []), new TrainOptions(), null, _ => { }, TestContext.Current.CancellationToken);
}
