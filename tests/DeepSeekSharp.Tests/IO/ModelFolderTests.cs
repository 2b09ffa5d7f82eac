using System.Diagnostics;
using System.Text.Json;
using DeepSeekSharp.IO;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.IO;

/// <summary>Commands that write a model folder never overwrite their input and write the folder whole.</summary>
public class ModelFolderTests
{
    private static string CopyOfTinyModel(string dir)
    {
        string model = Path.Combine(dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(TestPaths.Fixture("v3-tiny"), f), Path.Combine(model, f));
        return model;
    }

    private static string[] Files(string dir) => Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;

    [Theory]
    [InlineData("quantize")]
    [InlineData("dequantize")]
    public void WritingOverTheInputIsRefusedAndTheInputStaysIntact(string command)
    {
        string dir = TestPaths.TempDir();
        string model = command == "quantize" ? CopyOfTinyModel(dir) : Path.Combine(dir, "fp8");
        if (command == "dequantize")
        {
            Directory.CreateDirectory(model);
            foreach (var f in Directory.GetFiles(TestPaths.Fixture("v3-tiny-fp8"))) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        }
        byte[] weights = File.ReadAllBytes(Path.Combine(model, "model.safetensors"));
        foreach (var extra in new[] { Array.Empty<string>(), ["--overwrite"] })
        {
            var r = DssProcess.Run([command, "--model", model, "--out", model, .. extra]);
            DssProcess.AssertCleanError(r, "input");
            Assert.Equal(weights, File.ReadAllBytes(Path.Combine(model, "model.safetensors")));
        }
        // A folder holding the input is refused too (replacing it would delete the input).
        DssProcess.AssertCleanError(DssProcess.Run(command, "--model", model, "--out", dir, "--overwrite"), "input");
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(model, "model.safetensors")));
    }

    [Fact]
    public void AnExistingModelFolderIsReplacedWholeOnlyWithOverwrite()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "out");
        Directory.CreateDirectory(output);
        ModelCheckpoint.Save(ModelCheckpoint.Load(TestPaths.Fixture("v3-tiny")), output, DType.F32, maxShardBytes: 64 * 1024);
        Assert.True(File.Exists(Path.Combine(output, "model.safetensors.index.json")));

        var refused = DssProcess.Run("quantize", "--model", TestPaths.Fixture("v3-tiny"), "--out", output);
        DssProcess.AssertCleanError(refused, "--overwrite");
        var r = DssProcess.Run("quantize", "--model", TestPaths.Fixture("v3-tiny"), "--out", output, "--overwrite");
        Assert.True(r.ExitCode == 0, r.Stderr);
        // No shard of the previous model survives beside the new weights.
        Assert.Equal(["config.json", "generation_config.json", "model.safetensors"], Files(output));
        Assert.Contains("quantization_config", File.ReadAllText(Path.Combine(output, "config.json")));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(dir), e => Path.GetFileName(e).StartsWith('.'));
    }

    [Fact]
    public void AFolderThatIsNotAModelIsNeverReplaced()
    {
        string dir = TestPaths.TempDir();
        string notes = Path.Combine(dir, "notes");
        Directory.CreateDirectory(notes);
        File.WriteAllText(Path.Combine(notes, "todo.txt"), "keep me");
        var r = DssProcess.Run("init", "--preset", "tiny-v3", "--out", notes, "--overwrite");
        DssProcess.AssertCleanError(r, "not a model folder");
        Assert.Equal(["todo.txt"], Files(notes));
    }

    [Fact]
    public void InitWritesTheDtypeItStoredAndRefusesToOverwriteWithoutTheFlag()
    {
        string dir = TestPaths.TempDir();
        string model = Path.Combine(dir, "tiny");
        Assert.Equal(0, DssProcess.Run("init", "--preset", "tiny-v3", "--out", model, "--dtype", "bf16").ExitCode);
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(model, "config.json"))))
            Assert.Equal("bfloat16", config.RootElement.GetProperty("torch_dtype").GetString());
        Assert.Equal(["config.json", "generation_config.json", "model.safetensors"], Files(model));

        DssProcess.AssertCleanError(DssProcess.Run("init", "--preset", "tiny-v3", "--out", model), "--overwrite");
        var r = DssProcess.Run("init", "--preset", "tiny-v3", "--out", model, "--overwrite");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(model, "config.json"))))
            Assert.Equal("float32", config.RootElement.GetProperty("torch_dtype").GetString());
    }

    [Fact]
    public void QuantizeRecordsTheHighPrecisionDtype()
    {
        string dir = TestPaths.TempDir();
        string output = Path.Combine(dir, "fp8");
        var r = DssProcess.Run("quantize", "--model", TestPaths.Fixture("v3-tiny"), "--out", output, "--dtype", "bf16");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "config.json")));
        Assert.Equal("bfloat16", config.RootElement.GetProperty("torch_dtype").GetString());
    }

    [Fact]
    public void ForwardOutputOverAFileOfTheModelIsRefused()
    {
        string dir = TestPaths.TempDir();
        string model = CopyOfTinyModel(dir);
        byte[] weights = File.ReadAllBytes(Path.Combine(model, "model.safetensors"));
        var r = DssProcess.Run("forward", "--model", model, "--tokens", "1,2,3", "--out", Path.Combine(model, "model.safetensors"));
        DssProcess.AssertCleanError(r, "input model folder");
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(model, "model.safetensors")));
    }

    [Fact]
    public void AFailedWriteLeavesNothingAndASwapReplacesTheWholeFolder()
    {
        string dir = TestPaths.TempDir();
        string target = Path.Combine(dir, "target");
        Assert.Throws<InvalidOperationException>(() => AtomicFolder.Write(target, tmp =>
        {
            File.WriteAllText(Path.Combine(tmp, "half"), "x");
            throw new InvalidOperationException("disk full");
        }, replace: false));
        Assert.Empty(Directory.GetFileSystemEntries(dir));

        AtomicFolder.Write(target, tmp => File.WriteAllText(Path.Combine(tmp, "a"), "1"), replace: false);
        Assert.Throws<DeepSeekSharpException>(() => AtomicFolder.Write(target, tmp => File.WriteAllText(Path.Combine(tmp, "b"), "2"), replace: false));
        AtomicFolder.Write(target, tmp => File.WriteAllText(Path.Combine(tmp, "b"), "2"), replace: true);
        Assert.Equal(["b"], Files(target));
        Assert.Equal([target], Directory.GetFileSystemEntries(dir));
    }

    [Fact]
    public void LeftoversOfAWriterThatDiedAreRemovedAndThoseOfALiveOneKept()
    {
        string dir = TestPaths.TempDir();
        using var dead = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        dead.WaitForExit();
        string deadFolder = Path.Combine(dir, $".target.tmp-{dead.Id}-0123");
        string deadFile = Path.Combine(dir, $".metrics.jsonl.tmp-{dead.Id}-4567");
        string live = Path.Combine(dir, $".target.tmp-{Environment.ProcessId}-89ab");
        Directory.CreateDirectory(deadFolder);
        File.WriteAllText(deadFile, "partial");
        Directory.CreateDirectory(live);
        Assert.Equal(2, AtomicFolder.RemoveLeftovers(dir));
        Assert.Equal([live], Directory.GetFileSystemEntries(dir));
    }
}
