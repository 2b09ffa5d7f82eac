using DeepSeekSharp.FineTuning.Esft;

namespace DeepSeekSharp.Tests.FineTuning.Esft;

/// <summary>
/// ESFT's expert selection against DeepSeek's release: its four published expert configs (token scores, p = 0.2)
/// come out byte for byte from its four summary.json files; the boundary and tie rules pinned on small tables.
/// </summary>
public sealed class ExpertSelectionTests
{
    public static TheoryData<string> Tasks => new() { "intent", "law", "summary", "translation" };

    [Theory]
    [MemberData(nameof(Tasks))]
    public void ReproducesTheReleasedExpertConfig(string task)
    {
        string esft = TestPaths.Fixture("esft");
        var scores = ExpertScores.Read(Path.Combine(esft, "expert_scores", task, "summary.json"));
        var config = ExpertSelection.Select(scores.Of("token"), 0.2);
        Assert.Equal(File.ReadAllText(Path.Combine(esft, "expert_configs", task + ".json")), config.ToJson());
    }

    [Theory]
    [MemberData(nameof(Tasks))]
    public void ReleasedConfigsReadBackUnchanged(string task)
    {
        string path = Path.Combine(TestPaths.Fixture("esft"), "expert_configs", task + ".json");
        var config = ExpertConfig.Read(path);
        Assert.Equal(26, config.Experts.Count);
        Assert.False(config.SharedExperts);
        Assert.Equal(File.ReadAllText(path), config.ToJson());
    }

    [Fact]
    public void StopsOnceTheCumulativeScoreReachesP()
    {
        var table = new[] { new LayerScores(1, [0, 1, 2, 3], [0.1, 0.4, 0.3, 0.2]) };
        // 0.4 < 0.5 → add 0.3 → 0.7 ≥ 0.5: two experts.
        Assert.Equal([1, 2], ExpertSelection.Select(table, 0.5).ExpertsOf(1));
        // Reaching p exactly stops: 0.4 + 0.3 = 0.7 (in double, 0.7000000000000001 ≥ 0.7).
        Assert.Equal([1, 2], ExpertSelection.Select(table, 0.7).ExpertsOf(1));
        Assert.Equal([1], ExpertSelection.Select(table, 0.4).ExpertsOf(1));
        Assert.Equal([1, 2, 3, 0], ExpertSelection.Select(table, 1.0).ExpertsOf(1));
    }

    [Fact]
    public void EqualScoresKeepTheFileOrder()
    {
        // Experts listed 3, 0, 2, 1: the tie between 3 and 2 goes to 3 (listed first), as Python's stable sort.
        var table = new[] { new LayerScores(4, [3, 0, 2, 1], [0.25, 0.1, 0.25, 0.4]) };
        Assert.Equal([1, 3, 2], ExpertSelection.Select(table, 0.8).ExpertsOf(4));
        var flags = ExpertSelection.Select(table, 0.1, sharedExperts: true, nonExpertModules: true);
        Assert.Equal("{\"experts\": {\"4\": [1]}, \"shared_experts\": true, \"non_expert_modules\": true}", flags.ToJson());
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void RejectsAThresholdOutsideZeroToOne(double p)
    {
        var table = new[] { new LayerScores(1, [0, 1], [0.5, 0.5]) };
        var e = Assert.Throws<DeepSeekSharpException>(() => ExpertSelection.Select(table, p));
        Assert.StartsWith("--p: must be in (0, 1]", e.Message);
    }
}
