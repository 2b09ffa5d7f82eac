namespace DeepSeekSharp.Tests;

/// <summary>Generated text printed to a terminal cannot drive it: control and format characters are escaped.</summary>
public class PrintableTextTests
{
    [Fact]
    public void ControlAndFormatCharactersAreEscapedNewlinesAndTabsKept()
    {
        Assert.Equal("a\\u202Eb\\u001B[2J\\u0000\\u000D\n\tc\\u200B\\u2028\\uD800 😀 中文 naïve",
            PrintableText.Escape("a\u202Eb\u001B[2J\0\r\n\tc\u200B\u2028\uD800 😀 中文 naïve"));
        Assert.Equal("\\U000E0001", PrintableText.Escape("\U000E0001")); // a format character outside the BMP (language tag)
        string plain = "plain text\n";
        Assert.Same(plain, PrintableText.Escape(plain));
    }

    [Fact]
    public void TrainingSamplesPrintNoRawControlCharacters()
    {
        // A model trained on nothing but ESC and RIGHT-TO-LEFT OVERRIDE samples them; the log line must show escapes.
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat("\u001B\u202E", 4000)));
        string yaml = Path.Combine(dir, "train.yaml");
        File.WriteAllText(yaml, $"""
            model_preset: tiny-v3
            tokenizer: byte
            datasets: [{Path.Combine(dir, "data.txt")}]
            sequence_len: 32
            micro_batch_size: 4
            max_steps: 30
            learning_rate: 1.0e-2
            lr_scheduler: constant
            warmup_steps: 0
            eval_steps: 30
            eval_batches: 1
            save_steps: 30
            sample_tokens: 12
            sample_prompt: "\e"
            output_dir: {Path.Combine(dir, "run")}
            """);
        var r = Cli.DssProcess.Run("train", "--config", yaml);
        Directory.Delete(dir, true);
        Assert.True(r.ExitCode == 0, r.Stderr);
        string sample = r.Stdout.Split('\n').Single(l => l.Contains("sample: ", StringComparison.Ordinal));
        Assert.DoesNotContain(sample, c => c < ' ' || c == '\u202E');
        Assert.Matches(@"\\u(001B|202E)", sample);
    }
}
