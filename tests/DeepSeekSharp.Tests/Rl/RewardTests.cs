using DeepSeekSharp.Rl;
using DeepSeekSharp.Rl.Rewards;

namespace DeepSeekSharp.Tests.Rl;

public class RewardTests
{
    private static RewardInput Item(string completion, string? answer = "#### 72") => new("q", completion, answer);

    [Theory]
    [InlineData("48 + 24 = 72\n#### 72", 1f)]
    [InlineData("so 72 it is. #### 70", 0f)]                  // the number after the last #### decides
    [InlineData("She sold 48 then 24, 72 in all", 1f)]         // no ####: the last number
    [InlineData("#### 72.00", 1f)]
    [InlineData("no number", 0f)]
    public void AccuracyUsesGsm8ksAnswerRule(string completion, float expected) =>
        Assert.Equal(expected, new NumericAnswerReward(NumericAnswerReward.Rule.Gsm8k).Score(Item(completion)));

    [Fact]
    public void BoxedAndLastNumberReadTheirOwnPlaces()
    {
        Assert.Equal(1f, new NumericAnswerReward(NumericAnswerReward.Rule.Boxed).Score(Item(@"first \boxed{3}, finally \boxed{72} (not 5)")));
        Assert.Equal(0f, new NumericAnswerReward(NumericAnswerReward.Rule.Boxed).Score(Item("72")));
        Assert.Equal(1f, new NumericAnswerReward(NumericAnswerReward.Rule.LastNumber).Score(Item("#### 5 ... 72")));
        Assert.Null(new NumericAnswerReward(NumericAnswerReward.Rule.Gsm8k).Score(Item("72", answer: null)));
    }

    [Theory]
    [InlineData("<think>\n6*12\n</think>\n72", 1f)]
    [InlineData("<think>6*12</think>", 0f)]       // no answer after the reasoning
    [InlineData("72 <think>x</think> 72", 0f)]    // reasoning must come first
    public void FormatIsThinkThenAnswer(string completion, float expected) =>
        Assert.Equal(expected, new ThinkFormatReward().Score(Item(completion)));

    private sealed class Throwing : IRewardFunction
    {
        public string Name => "flaky";
        public float? Score(RewardInput input) => input.Completion == "boom" ? throw new InvalidOperationException("bad item") : input.Completion == "nan" ? float.NaN : 1f;
    }

    [Fact]
    public void WeightsSumAndABrokenFunctionSkipsItemsWithoutStopping()
    {
        var set = new RewardSet([new NumericAnswerReward(NumericAnswerReward.Rule.Gsm8k), new Throwing()], [1f, 0.5f]);
        var scores = set.Score([Item("#### 72"), Item("boom"), Item("nan")]);
        Assert.Equal([1.5f, 0f, 0f], scores.Total);
        Assert.True(float.IsNaN(scores.PerFunction[1].Scores[1]) && float.IsNaN(scores.PerFunction[1].Scores[2]));
        var problem = Assert.Single(scores.Problems);                      // reported once per function
        Assert.Contains("reward 'flaky' threw InvalidOperationException: bad item", problem);
    }

    [Theory]
    [InlineData("nonsense", "unknown reward 'nonsense'")]
    [InlineData("regex:(", "not a valid regular expression")]
    [InlineData("missing.dll:A.B", "reward assembly not found")]
    public void BadRewardNamesAreOneClearLine(string name, string message)
    {
        var e = Assert.Throws<DeepSeekSharpException>(() => RewardSet.FromNames([name], null, Path.GetTempPath()));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void AUserRewardLoadsFromAnAssembly()
    {
        // This test assembly holds a public IRewardFunction: loaded by path and type name, as a user's would be.
        string dll = typeof(LengthReward).Assembly.Location;
        var set = RewardSet.FromNames([$"{dll}:{typeof(LengthReward).FullName}", "regex:^ab"], [2f, 1f], "/");
        Assert.Equal([2 * 0.3f + 1f], set.Score([Item("abc")]).Total);
    }

    [Fact]
    public void ArithmeticTaskIsDeterministicVerifiableAndSplitsCleanly()
    {
        string dir = TestPaths.TempDir();
        var (train, test) = ArithmeticTask.Write(dir, 200, 50, seed: 4, maxOperand: 99, operators: "+-*");
        Assert.Equal(File.ReadAllText(train), File.ReadAllText(ArithmeticTask.Write(TestPaths.TempDir(), 200, 50, 4, 99, "+-*").Train));
        var trainQuestions = File.ReadLines(train).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("question").GetString()).ToHashSet();
        Assert.Equal(200, trainQuestions.Count);
        var accuracy = new NumericAnswerReward(NumericAnswerReward.Rule.Gsm8k);
        foreach (var line in File.ReadLines(test))
        {
            var row = System.Text.Json.JsonDocument.Parse(line).RootElement;
            string q = row.GetProperty("question").GetString()!, answer = row.GetProperty("answer").GetString()!;
            Assert.DoesNotContain(q, trainQuestions);
            var parts = q["What is ".Length..^1].Split(' ');
            long a = long.Parse(parts[0]), b = long.Parse(parts[2]);
            long expected = parts[1] switch { "+" => a + b, "-" => a - b, _ => a * b };
            Assert.True(expected >= 0);
            Assert.Equal(1f, accuracy.Score(new RewardInput(q, $"#### {expected}", answer)));
        }
        Assert.Throws<DeepSeekSharpException>(() => ArithmeticTask.Write(dir, 100, 10, 1, 3, "+"));
    }
}

/// <summary>A user-defined reward for <see cref="RewardTests.AUserRewardLoadsFromAnAssembly"/>: 0.1 per character.</summary>
public sealed class LengthReward : IRewardFunction
{
    public string Name => "length";
    public float? Score(RewardInput input) => 0.1f * input.Completion.Length;
}
