using System.Text.Json;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tests.Cli;

namespace DeepSeekSharp.Tests.Distillation;

/// <summary>Offline teacher dumps: the file format round-trips, <c>dss distill dump</c> keeps the teacher's top-k at every
/// trained position, and Axolotl's KD JSONL lines land on the positions Axolotl gives them.</summary>
public class TeacherDumpTests
{
    private static KdSequence RandomSequence(Random rng, int k)
    {
        int t = 2 + rng.Next(30);
        int[] tokens = Enumerable.Range(0, t).Select(_ => rng.Next(500)).ToArray();
        int[] positions = Enumerable.Range(0, t - 1).Where(_ => rng.Next(3) > 0).ToArray();
        int[] ids = Enumerable.Range(0, positions.Length * k).Select(_ => rng.Next(500)).ToArray();
        float[] lp = Enumerable.Range(0, positions.Length * k).Select(_ => -(float)rng.NextDouble() * 10).ToArray();
        return new KdSequence(tokens, positions, ids, lp, k);
    }

    [Fact]
    public void ADumpOfSeveralShardsReadsBackExactly()
    {
        var rng = new Random(3);
        var written = Enumerable.Range(0, 40).Select(_ => RandomSequence(rng, 4)).ToList();
        string dir = Path.Combine(TestPaths.TempDir(), "dump");
        var writer = new TeacherDumpWriter(dir, 4, new Dictionary<string, string> { ["teacher"] = "t" }, shardRows: 100);
        foreach (var s in written) writer.Add(s);
        writer.Complete();
        Assert.True(Directory.GetFiles(dir, "kd-*.safetensors").Length > 2, "small shards: several files");
        using var dump = TeacherDump.Open(dir);
        Assert.Equal((written.Count, 4), (dump.Count, dump.K));
        for (int i = 0; i < written.Count; i++)
        {
            var got = dump.Sequence(i);
            Assert.Equal(written[i].Tokens, got.Tokens);
            Assert.Equal(written[i].Positions, got.Positions);
            Assert.Equal(written[i].Ids, got.Ids);
            Assert.Equal(written[i].LogProbs, got.LogProbs);
            Assert.Equal(written[i].Tokens, dump.Find(written[i].Tokens)!.Tokens);
        }
        Assert.Null(dump.Find([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    }

    [Fact]
    public void NotADumpIsOneLineError()
    {
        var e = Assert.Throws<DeepSeekSharpException>(() => TeacherDump.Open(TestPaths.TempDir()));
        Assert.Contains("kd.json", e.Message);
    }

    [Fact]
    public void DistillDumpKeepsTheTeachersTopKAtEveryTrainedPosition()
    {
        string dir = TestPaths.TempDir();
        string teacherDir = Path.Combine(dir, "teacher");
        var teacher = TinyModels.ByteVocabulary(64, seed: 9);
        ModelCheckpoint.Save(teacher, teacherDir);
        string data = Path.Combine(dir, "qa.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 5).Select(i => JsonSerializer.Serialize(new
        {
            segments = new object[] { new { text = $"Q{i}: why?\n", label = false }, new { text = $"A: because {i}\n", label = true } },
        })));
        string output = Path.Combine(dir, "dump");
        var r = DssProcess.Run("distill", "dump", "--teacher", teacherDir, "--data", data, "--type", "input_output", "--top-k", "5", "--out", output);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("5 sequences", r.Stderr);
        using var dump = TeacherDump.Open(output);
        Assert.Equal(5, dump.Count);
        for (int i = 0; i < dump.Count; i++)
        {
            var s = dump.Sequence(i);
            string answer = $"A: because {i}\n";
            // The trained tokens are the answer's bytes (and the EOS the byte tokenizer appends): the positions before them.
            Assert.InRange(s.Positions.Length, answer.Length, answer.Length + 1);
            Assert.Equal(Enumerable.Range(s.Tokens.Length - 1 - s.Positions.Length, s.Positions.Length), s.Positions);
            float[] logits;
            using (GradMode.NoGrad()) logits = teacher.Forward(s.Tokens, SequenceBatch.Training(1, s.Tokens.Length)).Logits.Span.ToArray();
            int v = teacher.Config.VocabSize;
            for (int row = 0; row < s.Positions.Length; row++)
            {
                var z = logits.AsSpan(s.Positions[row] * v, v).ToArray();
                double max = z.Max(), lse = max + Math.Log(z.Sum(x => Math.Exp(x - max)));
                var best = Enumerable.Range(0, v).OrderByDescending(j => z[j]).ThenBy(j => j).Take(5).ToArray();
                Assert.Equal(best, s.Ids.AsSpan(row * 5, 5).ToArray());
                for (int j = 0; j < 5; j++) Assert.Equal(z[best[j]] - lse, s.LogProbs[row * 5 + j], 1e-4);
            }
        }
    }

    [Fact]
    public void AxolotlJsonlRowsLandWhereAxolotlPutsThem()
    {
        string path = Path.Combine(TestPaths.TempDir(), "kd.jsonl");
        File.WriteAllLines(path,
        [
            // R = T rows: row 0 describes token 0 and is dropped; row j then belongs to position j (predicting token j + 1).
            """{"input_ids": [5, 6, 7, 8], "target_token_ids": [[1, 2], [6, 3], [7, 4], [8]], "logprobs": [[-0.1, -2], [-0.2, -3], [-0.3, -4], [-0.5]]}""",
            // R = T − 1 rows: row j is position j; labels −100 drop a position; a short row gets an empty slot.
            """{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8], "target_token_ids": [[6, 1], [7, 2], [8]], "logprobs": [[-0.2, -3], [-0.3, -4], [-0.5]]}""",
        ]);
        var seqs = AxolotlKdJsonl.Read(path).ToList();
        Assert.Equal([0, 1, 2], seqs[0].Positions);
        Assert.Equal([6, 3, 7, 4, 8, -1], seqs[0].Ids);
        Assert.Equal(float.NegativeInfinity, seqs[0].LogProbs[5]);
        Assert.Equal(-0.2f, seqs[0].LogProbs[0]);
        Assert.Equal([1, 2], seqs[1].Positions);
        Assert.Equal([7, 2, 8, -1], seqs[1].Ids);

        File.WriteAllText(path, """{"input_ids": [1, 2], "target_token_ids": [[1]], "logprobs": [[-1], [-2]]}""" + "\n");
        var e = Assert.Throws<DeepSeekSharpException>(() => AxolotlKdJsonl.Read(path).ToList());
        Assert.StartsWith(path + ": line 1:", e.Message);
    }
}
