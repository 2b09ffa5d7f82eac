using System.Diagnostics;
using System.Text.Json.Nodes;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.IO;

/// <summary>
/// Real model folders load (the Hugging Face hub cache links every file into blobs/), and what ties a folder's files
/// together is checked: FIFOs and devices are refused before they are opened, an FP8 weight needs its scale of the
/// right shape, and the index must name the shard of every tensor. Each failure is one line naming the file.
/// </summary>
public sealed class ModelFolderLoadingTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); } // the test-end hook may have removed it

    private static string Fixture(string name, string file) => Path.Combine(TestPaths.Fixture(name), file);

    /// <summary>Builds hub/models--x/{blobs/&lt;sha&gt;, snapshots/rev/&lt;file&gt; -&gt; ../../blobs/&lt;sha&gt;} from a fixture.</summary>
    private string HubSnapshot(string fixture)
    {
        string repo = Path.Combine(_dir, "hub", "models--deepseek-ai--tiny");
        string blobs = Path.Combine(repo, "blobs"), snapshot = Path.Combine(repo, "snapshots", "0123abc");
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        foreach (var file in new[] { "config.json", "model.safetensors" })
        {
            string sha = file == "config.json" ? "7c0ffee" : "5eed5eed5eed";
            File.Copy(Fixture(fixture, file), Path.Combine(blobs, sha));
            File.CreateSymbolicLink(Path.Combine(snapshot, file), Path.Combine("..", "..", "blobs", sha));
        }
        return snapshot;
    }

    [Fact]
    public void HubCacheSnapshotOfLinksLoadsLikeTheFiles()
    {
        string snapshot = HubSnapshot("v3-tiny");
        Assert.True(new FileInfo(Path.Combine(snapshot, "model.safetensors")).Length < 100, "the snapshot holds links, not copies");
        var linked = ModelCheckpoint.Load(snapshot);
        var direct = ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny"));
        foreach (var ((name, a), (_, b)) in direct.NamedParameters().Zip(linked.NamedParameters()))
            Assert.True(a.Span.SequenceEqual(b.Span), name);
        var r = DssProcess.Run("forward", "--model", snapshot, "--tokens", "1,2,3", "--out", Path.Combine(_dir, "o.safetensors"));
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    private static void MakeFifo(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    [Fact]
    public void FifosAreRefusedNotOpened()
    {
        // Each read would block forever on an open FIFO; a child process with a short timeout shows it does not.
        string fifo = Path.Combine(_dir, "fifo");
        MakeFifo(fifo);
        string model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        File.Copy(Fixture("v3-tiny", "model.safetensors"), Path.Combine(model, "model.safetensors"));
        File.CreateSymbolicLink(Path.Combine(model, "config.json"), fifo); // a config that is a link to a FIFO
        string weightsFifo = Path.Combine(_dir, "weights");
        Directory.CreateDirectory(weightsFifo);
        File.Copy(Fixture("v3-tiny", "config.json"), Path.Combine(weightsFifo, "config.json"));
        MakeFifo(Path.Combine(weightsFifo, "model.safetensors"));
        string yaml = Path.Combine(_dir, "train.yaml");
        MakeFifo(yaml);
        var cases = new (string File, string[] Args)[]
        {
            (Path.Combine(model, "config.json"), ["forward", "--model", model, "--tokens", "1,2", "--out", Path.Combine(_dir, "o.safetensors")]),
            (Path.Combine(model, "config.json"), ["inspect", "--model", model]),
            (Path.Combine(weightsFifo, "model.safetensors"), ["forward", "--model", weightsFifo, "--tokens", "1,2", "--out", Path.Combine(_dir, "o.safetensors")]),
            (fifo, ["tokenize", "--tokenizer", fifo, "--text", "hi"]),
            (yaml, ["train", "--config", yaml]),
            (fifo, ["tokenize", "--tokenizer", Path.Combine(TestPaths.Fixture("tokenizer"), "trained-800.json"), "--jsonl", fifo]),
        };
        foreach (var (file, args) in cases)
        {
            var r = DssProcess.Run(new Dictionary<string, string>(), TimeSpan.FromSeconds(30), args);
            DssProcess.AssertCleanError(r, file);
            Assert.Contains("FIFO", r.Stderr);
        }
    }

    /// <summary>Copies the FP8 fixture into the temp folder with its tensors passed through <paramref name="edit"/>.</summary>
    private string Fp8Variant(Func<List<RawTensor>, List<RawTensor>> edit)
    {
        string dir = Path.Combine(_dir, "fp8");
        Directory.CreateDirectory(dir);
        File.Copy(Fixture("v3-tiny-fp8", "config.json"), Path.Combine(dir, "config.json"));
        var tensors = new List<RawTensor>();
        using (var reader = SafeTensorsReader.Open(Fixture("v3-tiny-fp8", "model.safetensors")))
            foreach (var e in reader.Tensors) tensors.Add(new RawTensor(e.Name, e.DType, e.Shape, reader.GetBytes(e).ToArray()));
        SafeTensorsWriter.WriteRaw(Path.Combine(dir, "model.safetensors"), edit(tensors));
        return dir;
    }

    private const string Weight = "model.layers.1.mlp.experts.3.up_proj.weight";

    [Fact]
    public void Fp8WeightWithoutItsScaleIsOneLine()
    {
        string dir = Fp8Variant(ts => ts.Where(t => t.Name != Weight + "_scale_inv").ToList());
        foreach (var weights in new[] { "fp32", "fp8" })
        {
            var r = DssProcess.Run("forward", "--model", dir, "--tokens", "1,2", "--weights", weights, "--out", Path.Combine(_dir, "o.safetensors"));
            DssProcess.AssertCleanError(r, Path.Combine(dir, "model.safetensors"));
            Assert.Contains(Weight + "_scale_inv", r.Stderr);
        }
    }

    [Fact]
    public void Fp8ScaleOfTheWrongShapeIsOneLine()
    {
        // The weight is 16x32: one 128x128 block, so its scale must be [1, 1]; [2, 1] would dequantise against blocks that do not exist.
        string dir = Fp8Variant(ts => ts.Select(t => t.Name == Weight + "_scale_inv"
            ? t with { Shape = [2, 1], Bytes = new byte[8] } : t).ToList());
        foreach (var weights in new[] { "fp32", "fp8" })
        {
            var r = DssProcess.Run("forward", "--model", dir, "--tokens", "1,2", "--weights", weights, "--out", Path.Combine(_dir, "o.safetensors"));
            DssProcess.AssertCleanError(r, Path.Combine(dir, "model.safetensors"));
            Assert.Contains("[2, 1]", r.Stderr);
        }
    }

    private string ShardedCopy()
    {
        string dir = Path.Combine(_dir, "sharded");
        ModelCheckpoint.Save(ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")), dir, maxShardBytes: 64 * 1024);
        return dir;
    }

    [Fact]
    public void IndexNamingTheWrongShardIsOneLine()
    {
        string dir = ShardedCopy();
        string index = Path.Combine(dir, "model.safetensors.index.json");
        var doc = JsonNode.Parse(File.ReadAllText(index))!;
        var map = doc["weight_map"]!.AsObject();
        string name = "model.norm.weight", actual = map[name]!.GetValue<string>();
        string other = map.Select(e => e.Value!.GetValue<string>()).First(s => s != actual);
        map[name] = other;
        File.WriteAllText(index, doc.ToJsonString());
        var r = DssProcess.Run("forward", "--model", dir, "--tokens", "1,2", "--out", Path.Combine(_dir, "o.safetensors"));
        DssProcess.AssertCleanError(r, index);
        Assert.Contains($"'{name}' is mapped to {other}, but it is in {actual}", r.Stderr);
    }

    [Fact]
    public void IndexLeavingATensorOutIsOneLine()
    {
        string dir = ShardedCopy();
        string index = Path.Combine(dir, "model.safetensors.index.json");
        var doc = JsonNode.Parse(File.ReadAllText(index))!;
        doc["weight_map"]!.AsObject().Remove("model.layers.2.mlp.gate.weight");
        File.WriteAllText(index, doc.ToJsonString());
        var r = DssProcess.Run("forward", "--model", dir, "--tokens", "1,2", "--out", Path.Combine(_dir, "o.safetensors"));
        DssProcess.AssertCleanError(r, index);
        Assert.Contains("'model.layers.2.mlp.gate.weight'", r.Stderr);
        Assert.Contains("missing from the weight_map", r.Stderr);
    }
}
