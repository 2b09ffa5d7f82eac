using DeepSeekSharp.Evaluation;

namespace DeepSeekSharp.Tests.Evaluation;

/// <summary>GSM8K's answer extraction and scoring on written-out generations (no model).</summary>
public class Gsm8kAnswerTests
{
    [Theory]
    [InlineData("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 1,234", "1234")]
    [InlineData("The answer is $18.", "18")]
    [InlineData("He lost 3 and then 10, so the change is -7", "-7")]
    [InlineData("#### -7", "-7")]
    [InlineData("Each costs 1.25, so 2 cost #### 2.50", "2.50")]
    [InlineData("#### $1,000,000.", "1000000")]
    [InlineData("3 apples and 5 pears make 8", "8")]
    [InlineData("#### 72\nThen someone adds 100 more", "72")]
    [InlineData("First #### 5, then #### 6 apples", "6")]
    [InlineData("I do not know.", null)]
    [InlineData("", null)]
    [InlineData("It has 4 legs, so ####", null)]
    public void ExtractsTheFinalAnswer(string text, string? expected) => Assert.Equal(expected, Gsm8kAnswer.Extract(text));

    [Theory]
    [InlineData("#### 2.50", "2.5", true)]
    [InlineData("The total is $18.00.", "18", true)]
    [InlineData("#### 1,234", "1234", true)]
    [InlineData("#### -3", "3", false)]
    [InlineData("#### 18", "180", false)]
    [InlineData("no number at all", "0", false)]
    public void ComparesAsDecimals(string generation, string reference, bool correct) =>
        Assert.Equal(correct, Gsm8kAnswer.IsCorrect(generation, decimal.Parse(reference, System.Globalization.CultureInfo.InvariantCulture)));

    private static readonly Gsm8kItem[] Items =
    [
        new("Q1", "a\n#### 18", "18", "t:1"),
        new("Q2", "b\n#### 3", "3", "t:2"),
        new("Q3", "c\n#### 70000", "70000", "t:3"),
    ];

    [Fact]
    public void GenerationsThatAreTheReferenceSolutionsScoreOne()
    {
        var result = Gsm8kEvaluator.Score(Items, Items.Select(i => i.Answer).ToList());
        Assert.Equal(1.0, result.Accuracy);
        Assert.Equal(3, result.Correct);
        Assert.Equal(["t:1", "t:2", "t:3"], result.Right.Select(s => s.Source));
        Assert.Empty(result.Wrong);
    }

    [Fact]
    public void MixedGenerationsScoreTheirShareAndKeepSamplesOfBoth()
    {
        string[] generations = ["The answer is $18.", "So 2 + 2 = 4.\n#### 4", "No idea"];
        var result = Gsm8kEvaluator.Score(Items, generations, samples: 1);
        Assert.Equal(1, result.Correct);
        Assert.Equal(1.0 / 3, result.Accuracy, 12);
        Assert.Equal(1, result.NoAnswer);
        var right = Assert.Single(result.Right);
        Assert.Equal(("t:1", "18", true), (right.Source, right.Predicted, right.Correct));
        var wrong = Assert.Single(result.Wrong); // one kept of the two wrong
        Assert.Equal(("t:2", "4", "3", false), (wrong.Source, wrong.Predicted, wrong.Reference, wrong.Correct));
    }

    [Fact]
    public void ReadsTheReferenceAnswerAndRejectsAnAnswerWithoutOne()
    {
        string dir = TestPaths.TempDir();
        string good = Path.Combine(dir, "good.jsonl"), bad = Path.Combine(dir, "bad.jsonl");
        File.WriteAllLines(good, [
            """{"question": "q1", "answer": "x = 1,000 + 234\n#### 1,234"}""",
            """{"question": "q2", "answer": "#### 5"}""",
            """{"question": "q3", "answer": "#### 6"}""",
        ]);
        var items = Gsm8kEvaluator.Read(good, limit: 2);
        Assert.Equal(2, items.Count);
        Assert.Equal(("q1", "1234", 1234m, $"{good}:1"), (items[0].Question, items[0].Reference, items[0].ReferenceValue, items[0].Source));
        File.WriteAllLines(bad, ["""{"question": "q1", "answer": "#### 5"}""", """{"question": "q2", "answer": "five"}"""]);
        var e = Assert.Throws<DeepSeekSharpException>(() => Gsm8kEvaluator.Read(bad));
        Assert.StartsWith($"{bad}:2:", e.Message);
    }
}
