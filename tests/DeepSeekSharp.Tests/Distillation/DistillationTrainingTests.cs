using System.Text.Json;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Distillation;

/// <summary>
/// <c>distillation:</c> in training: a tiny student learning from a tiny teacher (another width, same vocabulary) lowers
/// the KL, and offline training from a dump with k = V takes the same steps as online training.
/// </summary>
public class DistillationTrainingTests
{
    private readonly string _dir = TestPaths.TempDir();

    /// <summary>The tiny-v3 preset narrowed to hidden 64 with the byte tokenizer's 264 ids (the student's preset is sized to its tokenizer the same way).</summary>
    private string Teacher()
    {
        string dir = Path.Combine(_dir, "teacher");
        var node = System.Text.Json.Nodes.JsonNode.Parse(Presets.TinyV3)!;
        node["hidden_size"] = 64;
        node["vocab_size"] = 264;
        var model = new DeepSeekModel(DeepSeekConfig.Parse(node.ToJsonString()), materialize: true);
        ModelInit.InitializeRandom(model, 21);
        ModelCheckpoint.Save(model, dir);
        return dir;
    }

    private string Config(string output, string distillation, int steps) => KdRun.Config(_dir, output, distillation, steps, packed: false);

    private static double[] Losses(string output) => KdRun.Losses(output);

    private static void Train(string config) => KdRun.Train(config);

    [Fact]
    public void AStudentTrainedWithKdFromATeacherLowersTheKl()
    {
        string output = Path.Combine(_dir, "kd");
        // kd_alpha 1, kd_ce_alpha 0, τ = 1: the loss is the KL alone.
        Train(Config(output, $"{{teacher: {Teacher()}, kd_alpha: 1, kd_ce_alpha: 0, kd_temperature: 1}}", steps: 8));
        double[] losses = Losses(output);
        Assert.Equal(8, losses.Length);
        Assert.True(losses[0] > 0.01, $"a random student should differ from a random teacher (KL {string.Join(", ", losses)})");
        Assert.True(losses[^1] < 0.5 * losses[0], $"KD should pull the student towards the teacher: {string.Join(", ", losses)}");
        using var run = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, TrainConfig.RunFileName)));
        Assert.Equal(1, run.RootElement.GetProperty("distillation").GetProperty("kd_alpha").GetDouble());
    }

    [Theory]
    [InlineData("renormalize")]
    [InlineData("bucket")]
    public void OfflineFromADumpWithKEqualToTheVocabularyTrainsLikeOnline(string tail)
    {
        string teacher = Teacher();
        string online = Path.Combine(_dir, "online"), offline = Path.Combine(_dir, "offline"), dump = Path.Combine(_dir, "dump");
        string settings = $"kd_alpha: 0.7, kd_ce_alpha: 0.3, kd_temperature: 2, kd_tail: {tail}";
        string onlineConfig = Config(online, $"{{teacher: {teacher}, {settings}}}", steps: 3);
        var cfg = TrainConfig.Load(onlineConfig, []);
        var examples = SftDatasets.Load(cfg, SftTokenizer.FromConfig(cfg)).Examples.Select(e => e.Example).ToList();
        var teacherModel = ModelCheckpoint.Load(teacher);
        TeacherDumper.Dump(teacherModel, examples, new TeacherDumpWriter(dump, teacherModel.Config.VocabSize, new Dictionary<string, string>()));

        Train(onlineConfig);
        Train(Config(offline, $"{{logits: {dump}, {settings}}}", steps: 3));
        double[] a = Losses(online), b = Losses(offline);
        Assert.Equal(3, a.Length);
        Assert.True(a[2] < a[0], "the run should learn");
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * Math.Abs(a[i]), $"step {i + 1}: online {a[i]}, offline {b[i]}");
    }

    [Fact]
    public void ADistillationMappingWithBothSourcesIsOneLineError()
    {
        string path = Path.Combine(_dir, "bad.yaml");
        File.WriteAllText(path, "distillation: {teacher: a, logits: b}\n");
        var e = Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, []));
        Assert.StartsWith(path + ": distillation needs exactly one of", e.Message);
        File.WriteAllText(path, "distillation: {teacher: a, kd_temprature: 2}\n");
        Assert.Contains("unknown distillation key 'kd_temprature'", Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, [])).Message);
        File.WriteAllText(path, "distillation: {logits: d, kd_beta: 0.5}\n");
        Assert.Equal($"{path}: distillation.kd_beta > 0 with a top-k teacher needs kd_tail: bucket (with renormalize the student's top-k side is not a distribution)",
            Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, [])).Message);
        File.WriteAllText(path, "distillation: {teacher: t, kd_beta: 2}\n");
        Assert.Equal($"{path}: distillation: kd_beta must be in [0, 1] (got 2)", Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, [])).Message);
    }

    [Fact]
    public void ReverseKlTrainingFromATeacherLowersTheReverseKl()
    {
        string output = Path.Combine(_dir, "reverse");
        // kd_beta 1, kd_alpha 1, kd_ce_alpha 0: the loss is KL(student ‖ teacher) alone.
        Train(Config(output, $"{{teacher: {Teacher()}, kd_alpha: 1, kd_ce_alpha: 0, kd_beta: 1}}", steps: 8));
        double[] losses = Losses(output);
        Assert.True(losses[0] > 0.01 && losses[^1] < 0.5 * losses[0], $"reverse KL should fall: {string.Join(", ", losses)}");
        using var run = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, TrainConfig.RunFileName)));
        Assert.Equal(1, run.RootElement.GetProperty("distillation").GetProperty("kd_beta").GetDouble());
    }
}
