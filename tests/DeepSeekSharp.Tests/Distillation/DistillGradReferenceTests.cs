using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Distillation;

/// <summary>
/// <c>dss grad --teacher</c> against the float64 PyTorch reference (tools/reference/kd_reference.py): the v2-lite-tiny
/// student distilled from the v3-tiny teacher (different widths, depths, attention and MoE layouts; one vocabulary) on one
/// sequence, τ = 1 and 2, full vocabulary and top-8. The loss and every student gradient must match.
/// </summary>
public class DistillGradReferenceTests
{
    public static TheoryData<string, string[]> Cases => new()
    {
        { "full-t1", ["--kd-alpha", "0.5", "--kd-temperature", "1"] },
        { "full-t2", ["--kd-alpha", "0.5", "--kd-temperature", "2"] },
        { "top8-t1", ["--kd-alpha", "0.5", "--kd-temperature", "1", "--kd-top-k", "8"] },
        { "top8-t2", ["--kd-alpha", "0.5", "--kd-ce-alpha", "0.5", "--kd-temperature", "2", "--kd-top-k", "8", "--kd-tail", "renormalize"] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void LossAndEveryStudentGradientMatchPyTorch(string name, string[] kdArgs)
    {
        using var expected = SafeTensorsReader.Open(Path.Combine(TestPaths.Fixture("kd-v2-lite-tiny"), name + ".safetensors"));
        string tokens = string.Join(',', expected.ReadInt64("tokens"));
        string output = Path.Combine(TestPaths.TempDir(), "grad.safetensors");
        var r = DssProcess.Run(["grad", "--model", TestPaths.Fixture("v2-lite-tiny"), "--teacher", TestPaths.Fixture("v3-tiny"),
            "--tokens", tokens, .. kdArgs, "--out", output]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("kd: KL", r.Stderr);
        using var got = SafeTensorsReader.Open(output);
        Assert.InRange(Math.Abs(got.ReadFloat32("loss")[0] - expected.ReadFloat32("loss")[0]), 0, 1e-4);
        int compared = 0;
        foreach (var e in expected.Tensors.Where(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)))
        {
            float[] want = expected.ReadFloat32(e.Name), have = got.ReadFloat32(e.Name);
            double scale = Math.Max(1e-6, want.Max(Math.Abs)), worst = 0;
            for (int i = 0; i < want.Length; i++) worst = Math.Max(worst, Math.Abs(want[i] - have[i]) / scale);
            Assert.True(worst < 1e-3, $"{e.Name}: max error {worst:g3} relative to max |grad| {scale:g3}");
            compared++;
        }
        Assert.Equal(compared, got.Tensors.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)));
        Assert.True(compared > 20);
    }

    [Fact]
    public void ATeacherWithAnotherVocabularyIsOneLineError()
    {
        string dir = TestPaths.TempDir();
        string teacher = Path.Combine(dir, "teacher");
        Directory.CreateDirectory(teacher);
        foreach (var f in Directory.GetFiles(TestPaths.Fixture("v3-tiny"))) File.Copy(f, Path.Combine(teacher, Path.GetFileName(f)));
        var config = Path.Combine(teacher, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"vocab_size\": 128", "\"vocab_size\": 256"));
        var r = DssProcess.Run("grad", "--model", TestPaths.Fixture("v2-lite-tiny"), "--teacher", teacher, "--tokens", "1,2,3", "--out", Path.Combine(dir, "o.safetensors"));
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("error: ", r.Stderr.Trim());
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void KdOptionsWithoutATeacherAreOneLineError()
    {
        var r = DssProcess.Run("grad", "--model", TestPaths.Fixture("v2-lite-tiny"), "--tokens", "1,2,3", "--kd-top-k", "8", "--out", Path.Combine(TestPaths.TempDir(), "o.safetensors"));
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("error: --kd-top-k: needs --teacher", r.Stderr.Trim());
    }
}
