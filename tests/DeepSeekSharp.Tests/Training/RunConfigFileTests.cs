using System.Text.Json;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>train_config.json: the settings a run resolved, written into its output folder.</summary>
public class RunConfigFileTests
{
    [Fact]
    public void TheResolvedConfigLoadsBackUnchanged()
    {
        string root = TestPaths.TempDir();
        try
        {
            var original = TrainConfig.Load(null,
            [
                "datasets=a.txt,b.jsonl", "learning_rate=3e-3", "sample_prompt=say \"hi\": 'x' # not a comment\n\té", "precision=fp8",
                "base_model=null", "recompute_norms=true", "val_set_size=0.1", "output_dir=runs/x y",
            ]);
            string json = original.ToJson();
            string path = Path.Combine(root, TrainConfig.RunFileName);
            File.WriteAllText(path, json);
            var reloaded = TrainConfig.Load(path, []);
            Assert.Equal(json, reloaded.ToJson());
            Assert.Equal(original.SamplePrompt, reloaded.SamplePrompt);
            Assert.Equal(3e-3f, reloaded.LearningRate);
            Assert.Equal(["a.txt", "b.jsonl"], reloaded.Datasets.Select(d => d.Path));
            Assert.Null(reloaded.BaseModel);
            Assert.True(reloaded.RecomputeNorms);
            Assert.Equal(TrainConfig.Keys.Order(), JsonDocument.Parse(json).RootElement.EnumerateObject().Select(p => p.Name).Order());
        }
        finally { Directory.Delete(root, true); }
    }
}
