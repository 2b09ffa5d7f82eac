using System.Text.Json;
using DeepSeekSharp.FineTuning.Esft;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.FineTuning.Esft;

/// <summary>
/// ESFT's token and gate scores against the PyTorch reference (tools/reference/esft_reference.py): V3-style sigmoid +
/// bias routing with normalised weights, and V2-Lite-style softmax routing with raw weights; masked positions and a
/// sequence without a counted token are left out as the definition says.
/// </summary>
public sealed class ExpertScorerTests
{
    [Theory]
    [InlineData("v3-tiny")]
    [InlineData("v2-lite-tiny")]
    public void ScoresMatchTheReference(string fixture)
    {
        string expectedPath = Path.Combine(TestPaths.Fixture("esft"), $"scores-{fixture}.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(expectedPath));
        var sequences = doc.RootElement.GetProperty("sequences").EnumerateArray().Select(s => new ScoringSequence(
            [.. s.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32())],
            [.. s.GetProperty("counted").EnumerateArray().Select(c => c.GetInt32() == 1)])).ToList();
        var model = ModelCheckpoint.Load(TestPaths.Fixture(fixture));
        var scores = ExpertScorer.Score(model, sequences);
        Assert.Equal(3, scores.Sequences);
        var expected = ExpertScores.Read(expectedPath);
        foreach (var (ours, theirs) in new[] { (scores.Token, expected.Token), (scores.Gate, expected.Gate) })
        {
            Assert.Equal(theirs.Select(l => l.Layer), ours.Select(l => l.Layer));
            for (int l = 0; l < ours.Count; l++)
            {
                var a = ours[l].ByExpert();
                var b = theirs[l].ByExpert();
                Assert.Equal(b.Length, a.Length);
                for (int e = 0; e < a.Length; e++) Assert.True(Math.Abs(a[e] - b[e]) <= 1e-5, $"layer {ours[l].Layer} expert {e}: {a[e]} vs {b[e]}");
            }
        }
        // Token scores are shares of the top-k slots: 1 per layer.
        Assert.All(scores.Token, l => Assert.Equal(1.0, l.Scores.Sum(), 12));
    }

    [Fact]
    public void ScoreFileRoundTripsInFullPrecision()
    {
        string dir = TestPaths.TempDir();
        var scores = new ExpertScores([LayerScores.Ordered(1, [0.1 + 0.2, 1.0 / 3, 0.0])], [LayerScores.Ordered(1, [Math.PI / 10, 1e-17, 0.5])], 4, 99);
        string path = Path.Combine(dir, "scores.json");
        scores.Write(path);
        var back = ExpertScores.Read(path);
        Assert.Equal(scores.Token[0].Scores, back.Token[0].Scores);
        Assert.Equal(scores.Gate[0].Scores, back.Gate[0].Scores);
        Assert.Equal((4, 99L), (back.Sequences, back.Tokens));
    }
}
