using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Rl;

/// <summary>
/// A verifiable task small models can learn on a CPU: two-operand integer arithmetic, written in GSM8K's JSONL form
/// (<c>{"question": "What is 47 + 38?", "answer": "47 + 38 = 85\n#### 85"}</c>), so SFT reads it as
/// <c>type: gsm8k</c>, and the accuracy reward and <c>dss eval --type gsm8k</c> check it with GSM8K's answer rule.
/// Operands are uniform in [0, max]; subtraction keeps the first operand the larger (no negative answers). The same
/// seed gives the same file; the test split never repeats a training question.
/// </summary>
public static class ArithmeticTask
{
    public sealed record Problem(string Question, string Answer, long Result);

    /// <param name="operators">a subset of "+-*"</param>
    public static IEnumerable<Problem> Generate(int seed, int maxOperand, string operators)
    {
        if (maxOperand < 1) throw new DeepSeekSharpException($"the largest operand must be at least 1 (got {maxOperand})");
        if (operators.Length == 0 || operators.Any(c => c is not ('+' or '-' or '*')))
            throw new DeepSeekSharpException($"operators must be a non-empty subset of \"+-*\" (got \"{operators}\")");
        var rng = new Random(seed);
        while (true)
        {
            long a = rng.Next(maxOperand + 1), b = rng.Next(maxOperand + 1);
            char op = operators[rng.Next(operators.Length)];
            if (op == '-' && b > a) (a, b) = (b, a);
            long result = op switch { '+' => a + b, '-' => a - b, _ => a * b };
            string expression = string.Create(CultureInfo.InvariantCulture, $"{a} {op} {b}");
            yield return new Problem($"What is {expression}?", string.Create(CultureInfo.InvariantCulture, $"{expression} = {result}\n#### {result}"), result);
        }
    }

    /// <summary>Writes <c>train.jsonl</c> and <c>test.jsonl</c> (distinct questions) into <paramref name="dir"/>; returns their paths.</summary>
    public static (string Train, string Test) Write(string dir, int trainCount, int testCount, int seed, int maxOperand, string operators)
    {
        long distinct = (long)(maxOperand + 1) * (maxOperand + 1) * operators.Distinct().Count();
        if (trainCount + testCount > distinct / 2)
            throw new DeepSeekSharpException($"{trainCount + testCount} problems asked for, but operands up to {maxOperand} with \"{operators}\" give about {distinct} distinct ones: raise the largest operand");
        Directory.CreateDirectory(dir);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var train = new List<Problem>(trainCount);
        var test = new List<Problem>(testCount);
        foreach (var p in Generate(seed, maxOperand, operators))
        {
            if (!seen.Add(p.Question)) continue;
            if (test.Count < testCount) test.Add(p);
            else train.Add(p);
            if (train.Count == trainCount) break;
        }
        string trainPath = Path.Combine(dir, "train.jsonl"), testPath = Path.Combine(dir, "test.jsonl");
        IO.AtomicFile.WriteAllText(trainPath, ToJsonl(train));
        IO.AtomicFile.WriteAllText(testPath, ToJsonl(test));
        return (trainPath, testPath);
    }

    private static string ToJsonl(List<Problem> problems)
    {
        var sb = new StringBuilder();
        var options = new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };   // "+" as itself
        foreach (var p in problems) sb.Append(JsonSerializer.Serialize(new Dictionary<string, string> { ["question"] = p.Question, ["answer"] = p.Answer }, options)).Append('\n');
        return sb.ToString();
    }
}
