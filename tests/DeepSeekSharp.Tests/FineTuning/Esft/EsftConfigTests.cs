using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.FineTuning.Esft;

/// <summary>The ESFT keys of a training config: conflicting or out-of-range settings are one line naming the key.</summary>
public sealed class EsftConfigTests
{
    [Theory]
    [InlineData(new[] { "esft=a.json", "esft_method=token" }, "--set: esft_method conflicts with esft")]
    [InlineData(new[] { "esft_method=router" }, "--set: esft_method must be token or gate (got 'router')")]
    [InlineData(new[] { "esft_method=gate", "esft_p=1.5" }, "--set: esft_p must be a finite number in [0, 1] (got 1.5)")]
    [InlineData(new[] { "esft_method=gate", "esft_samples=0" }, "--set: esft_samples must be ≥ 1 (got 0)")]
    [InlineData(new[] { "esft=a.json", "adapter=lora", "base_model=b", "lora_target_linear=true" }, "--set: adapter lora conflicts with esft")]
    [InlineData(new[] { "esft=a.json", "unfrozen_parameters=[mlp]" }, "--set: esft decides what is frozen")]
    [InlineData(new[] { "adapter=esft", "base_model=b" }, "--set: adapter esft needs esft (an expert config) or esft_method")]
    [InlineData(new[] { "adapter=esft", "esft=a.json" }, "--set: base_model adapter: esft needs base_model")]
    public void BadEsftSettingsAreOneLine(string[] settings, string message)
    {
        var e = Assert.Throws<DeepSeekSharpException>(() => TrainConfig.Load(null, settings));
        Assert.StartsWith(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void EsftKeysRoundTripThroughTheRunFile()
    {
        var cfg = TrainConfig.Load(null, ["esft_method=gate", "esft_p=0.1", "esft_samples=8", "adapter=esft", "base_model=b"]);
        string dir = TestPaths.TempDir(), path = Path.Combine(dir, "run.json");
        File.WriteAllText(path, cfg.ToJson());
        var back = TrainConfig.Load(path, []);
        Assert.Equal(("gate", 0.1, 8, "esft"), (back.EsftMethod, back.EsftP, back.EsftSamples, back.Adapter));
        Assert.Null(back.Esft);
    }
}
