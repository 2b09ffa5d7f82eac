using DeepSeekSharp.Data;

namespace DeepSeekSharp.Tests.Data;

public class DataTests
{
    [Fact]
    public void ReadsEveryDatasetFormat()
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "a.jsonl"), "{\"text\": \"hello\"}\n\n{\"text\": \"world\"}\n");
        File.WriteAllText(Path.Combine(dir, "g.jsonl"), "{\"question\": \"1+1?\", \"answer\": \"2\"}\n");
        File.WriteAllText(Path.Combine(dir, "al.jsonl"), "{\"instruction\": \"Add\", \"input\": \"1 and 2\", \"output\": \"3\"}\n");
        File.WriteAllText(Path.Combine(dir, "c.jsonl"),
            "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n");
        Assert.Equal(["hello", "world"], DocumentReader.Read(Path.Combine(dir, "a.jsonl")).Select(d => d.Text));
        var g = DocumentReader.Read(Path.Combine(dir, "g.jsonl")).Single();
        Assert.Equal(("Question: 1+1?\nAnswer: ", "2"), (g.Prompt, g.Completion));
        var al = DocumentReader.Read(Path.Combine(dir, "al.jsonl")).Single();
        Assert.EndsWith("Add\n\n1 and 2<｜Assistant｜>", al.Prompt);
        var c = DocumentReader.Read(Path.Combine(dir, "c.jsonl")).Single();
        Assert.Equal("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>", c.Prompt);
        Assert.Equal("Hello<｜end▁of▁sentence｜>", c.Completion);
        Assert.Equal("chat", DocumentReader.DetectFormat(Path.Combine(dir, "c.jsonl")));
        Assert.Equal("gsm8k", DocumentReader.DetectFormat(Path.Combine(dir, "g.jsonl")));
        // A folder of text files, bin/obj skipped.
        Directory.CreateDirectory(Path.Combine(dir, "docs", "obj"));
        File.WriteAllText(Path.Combine(dir, "docs", "x.md"), "md");
        File.WriteAllText(Path.Combine(dir, "docs", "obj", "y.txt"), "skipped");
        Assert.Equal(["md"], DocumentReader.Read(Path.Combine(dir, "docs")).Select(d => d.Text));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void BadJsonLineNamesFileAndLine()
    {
        string dir = TestPaths.TempDir();
        string path = Path.Combine(dir, "bad.jsonl");
        File.WriteAllText(path, "{\"text\": \"ok\"}\n{not json}\n");
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => DocumentReader.Read(path, "jsonl").ToList());
        Assert.Contains("bad.jsonl:2", e.Message);
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void PackedBatchesAreDeterministicAndCoverEachEpochOnce(int bytesPerToken)
    {
        string dir = TestPaths.TempDir();
        string path = Path.Combine(dir, "t.bin");
        var ids = Enumerable.Range(0, 1000).ToArray();
        TokenFile.Write(path, [ids[..400], ids[400..]], bytesPerToken);
        using var file = TokenFile.Open(path, bytesPerToken);
        Assert.Equal(1000, file.Count);
        var a = new PackedBatches(file, 10, 0.1, seed: 5);
        var b = new PackedBatches(file, 10, 0.1, seed: 5);
        Assert.Equal(90, a.TrainWindows);
        var seen = new HashSet<int>();
        var x = new int[30]; var y = new int[30];
        for (int i = 0; i < 3; i++) // 3 batches of 3 windows... then the rest of the epoch
        {
            a.TrainBatch(i, 3, x); b.TrainBatch(i, 3, y);
            Assert.Equal(x, y);
        }
        for (long i = 0; i < 30; i++)
        {
            a.TrainBatch(i, 3, x);
            for (int w = 0; w < 3; w++) seen.Add(x[w * 10] / 10); // window start identifies the window
        }
        Assert.Equal(90, seen.Count); // one epoch = every training window exactly once
        var val = new int[10];
        a.ValidationWindow(0, val);
        Assert.Equal(ids[900..910], val);
        Directory.Delete(dir, true);
    }
}

public class PreTokenizedDatasetTests
{
    [Fact]
    public void Bin16ShardIsUsedAsIsAndBadIdsAreRejected()
    {
        string dir = TestPaths.TempDir();
        string shard = Path.Combine(dir, "train.bin");
        var ids = Enumerable.Range(0, 500).Select(i => i % 250).ToArray();
        TokenFile.Write(shard, [ids], 2);
        var cfg = DeepSeekSharp.Training.TrainConfig.Load(null, [$"datasets={shard}", $"output_dir={Path.Combine(dir, "out")}", "sequence_len=10"]);
        cfg.Datasets[0] = cfg.Datasets[0] with { Type = "bin16" };
        using (var data = DeepSeekSharp.Training.TrainingData.Prepare(cfg, new DeepSeekSharp.Tokenization.ByteTokenizer(), "byte", _ => { }))
        {
            var all = new int[500];
            data.File.Read(0, all);
            Assert.Equal(ids, all);
        }
        TokenFile.Write(shard, [[1, 2, 60000]], 2);
        cfg.OutputDir = Path.Combine(dir, "out2");
        var e = Assert.ThrowsAny<DeepSeekSharpException>(() => DeepSeekSharp.Training.TrainingData.Prepare(cfg, new DeepSeekSharp.Tokenization.ByteTokenizer(), "byte", _ => { }));
        Assert.Contains("60000", e.Message);
        Directory.Delete(dir, true);
    }
}
