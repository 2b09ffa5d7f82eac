using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using DeepSeekSharp.Cli.Serving;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Distillation;

/// <summary>
/// <c>distillation: {teacher_url: ...}</c>: a student trained against a teacher served by <c>dss serve</c> (started in the test
/// on a free port) takes exactly the steps it takes from a <c>dss distill dump</c> of the same teacher at the same k; an
/// unreachable or unusable teacher stops training with one line naming its URL.
/// </summary>
public class RemoteTeacherTests
{
    private readonly string _dir = TestPaths.TempDir();

    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>The teacher of <see cref="DistillationTrainingTests"/>: tiny-v3 at hidden 64 with the byte tokenizer's 264 ids.</summary>
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

    /// <summary>Serves the model in <paramref name="dir"/> on loopback as <c>dss serve</c> does; the base URL.</summary>
    private static async Task<(Microsoft.AspNetCore.Builder.WebApplication App, string Url)> Serve(string dir, string tokenizerFile, int maxLogprobs = 20)
    {
        var tokenizer = HfTokenizer.Load(tokenizerFile);
        var client = new DeepSeekChatClient(new CachedDecoder(ModelCheckpoint.Load(dir)), tokenizer, "teacher");
        int port = FreePort();
        var app = OpenAiServer.Build(client, tokenizer, new ServerOptions { Port = port, MaxLogprobs = maxLogprobs });
        await app.StartAsync(TestContext.Current.CancellationToken);
        return (app, $"http://127.0.0.1:{port}");
    }

    private string Config(string output, string distillation, int steps) => KdRun.Config(_dir, output, distillation, steps, packed: true);

    private static double[] Losses(string output) => KdRun.Losses(output);

    private static void Train(string config) => KdRun.Train(config);

    [Theory]
    [InlineData("renormalize")]
    [InlineData("bucket")]
    public async Task TrainingAgainstAServedTeacherEqualsTrainingFromItsDump(string tail)
    {
        const int K = 8;
        string teacher = Teacher();
        string tokenizerFile = Path.Combine(_dir, "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokenizerFile);
        string served = Path.Combine(_dir, "served"), offline = Path.Combine(_dir, "offline"), dump = Path.Combine(_dir, "dump");
        string settings = $"kd_alpha: 0.7, kd_ce_alpha: 0.3, kd_temperature: 2, kd_tail: {tail}";
        string offlineConfig = Config(offline, $"{{logits: {dump}, {settings}}}", steps: 3);
        var cfg = TrainConfig.Load(offlineConfig, []);
        var examples = SftDatasets.Load(cfg, SftTokenizer.FromConfig(cfg)).Examples.Select(e => e.Example).ToList();
        var teacherModel = ModelCheckpoint.Load(teacher);
        TeacherDumper.Dump(teacherModel, examples, new TeacherDumpWriter(dump, K, new Dictionary<string, string>()));

        var (app, url) = await Serve(teacher, tokenizerFile);
        try
        {
            Train(Config(served, $"{{teacher_url: {url}, kd_online_topk: {K}, {settings}}}", steps: 3));
        }
        finally
        {
            await app.StopAsync(CancellationToken.None);
            await app.DisposeAsync();
        }
        Train(offlineConfig);
        double[] a = Losses(served), b = Losses(offline);
        Assert.Equal(3, a.Length);
        Assert.True(a[2] < a[0], "the run should learn");
        Assert.Equal(b, a); // exactly: the served teacher's floats are the dump's
        foreach (var file in Directory.GetFiles(Path.Combine(offline, "checkpoint-3"), "*.safetensors"))
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(served, "checkpoint-3", Path.GetFileName(file))));
    }

    [Fact]
    public void AnUnreachableTeacherIsOneLineNamingItsUrl()
    {
        string url = $"http://127.0.0.1:{FreePort()}";
        var e = Assert.Throws<DeepSeekSharpException>(() => Train(Config(Path.Combine(_dir, "down"), $"{{teacher_url: {url}, kd_online_topk: 4}}", steps: 1)));
        Assert.StartsWith($"distillation.teacher_url {url}: cannot reach the teacher", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        e = Assert.Throws<DeepSeekSharpException>(() => Train(Config(Path.Combine(_dir, "bad"), "{teacher_url: teacher-host:8000, kd_online_topk: 4}", steps: 1)));
        Assert.Equal("distillation.teacher_url 'teacher-host:8000' is not an http:// or https:// URL", e.Message);
    }

    [Fact]
    public async Task ATeacherThatCapsItsLogprobsBelowKIsRefusedWithTheServersWords()
    {
        string tokenizerFile = Path.Combine(_dir, "tokenizer.json");
        ByteTokenizer.SaveAsHfJson(tokenizerFile);
        var (app, url) = await Serve(Teacher(), tokenizerFile, maxLogprobs: 4);
        try
        {
            using var remote = new RemoteTeacher(url, 8, 264, TimeSpan.FromSeconds(60));
            var e = Assert.Throws<DeepSeekSharpException>(() => remote.Fetch([[1, 2, 3]]));
            Assert.Equal($"distillation.teacher_url {url}: the teacher answered HTTP 400: Requested prompt logprobs of 8, which is greater than max allowed: 4", e.Message);
        }
        finally
        {
            await app.StopAsync(CancellationToken.None);
            await app.DisposeAsync();
        }
    }

    [Fact]
    public void TeacherUrlKeysAreCheckedWhenTheConfigIsRead()
    {
        string path = Path.Combine(_dir, "bad.yaml");
        File.WriteAllText(path, "distillation: {teacher_url: http://h:1}\n");
        Assert.Equal($"{path}: distillation.teacher_url needs kd_online_topk (the log-probabilities per position to request)",
            Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, [])).Message);
        File.WriteAllText(path, "distillation: {teacher_url: http://h:1, kd_top_k: 4}\n");
        Assert.Contains("takes kd_online_topk, not kd_top_k", Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, [])).Message);
        File.WriteAllText(path, "distillation: {teacher_url: http://h:1, logits: d, kd_online_topk: 4}\n");
        Assert.StartsWith(path + ": distillation needs exactly one of", Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(path, [])).Message);
    }
}
