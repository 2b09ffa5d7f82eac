using DeepSeekSharp.Evaluation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tokenization;

namespace DeepSeekSharp.Tests.Evaluation;

/// <summary>
/// The masked loss against the independent PyTorch reference: the v3-tiny fixture's logits (tools/reference, float64)
/// give, through a full log-softmax computed here, the cross-entropy of every position; a causal model's logits on a
/// prefix are the first rows of its logits on the whole sequence, so examples cut from the fixture's tokens have known
/// logits too.
/// </summary>
public class MaskedLossEvaluatorTests
{
    private const int I = TokenizedExample.IgnoreIndex;

    private static (DeepSeekModel Model, int[] Tokens, double[][] LogProbs) Fixture()
    {
        string dir = TestPaths.Fixture("v3-tiny");
        var model = ModelCheckpoint.Load(dir);
        using var expected = SafeTensorsReader.Open(Path.Combine(dir, "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        float[] logits = expected.ReadFloat32("logits"); // [T, V], PyTorch
        int v = logits.Length / tokens.Length;
        var logProbs = new double[tokens.Length][];
        for (int i = 0; i < tokens.Length; i++)
        {
            var row = logits.AsSpan(i * v, v);
            double max = double.NegativeInfinity, sum = 0;
            foreach (float x in row) max = Math.Max(max, x);
            foreach (float x in row) sum += Math.Exp(x - max);
            logProbs[i] = new double[v];
            for (int k = 0; k < v; k++) logProbs[i][k] = row[k] - max - Math.Log(sum);
        }
        return (model, tokens, logProbs);
    }

    /// <summary>An example of the first <paramref name="length"/> tokens whose labels carry loss where <paramref name="trained"/> says.</summary>
    private static TokenizedExample Example(int[] tokens, int length, Func<int, bool> trained) =>
        new(tokens[..length], Enumerable.Range(0, length).Select(i => trained(i) ? tokens[i] : I).ToArray());

    /// <summary>Σ −log p(labels[i+1] | ≤ i) over positions whose next label is trained, from the reference log-probabilities.</summary>
    private static (double Nats, int Count) Reference(TokenizedExample example, double[][] logProbs)
    {
        double nats = 0;
        int count = 0;
        for (int i = 0; i + 1 < example.Labels.Length; i++)
        {
            if (example.Labels[i + 1] == I) continue;
            nats -= logProbs[i][example.Labels[i + 1]];
            count++;
        }
        return (nats, count);
    }

    [Fact]
    public void MaskedLossEqualsTheReferenceCrossEntropyOverTrainedTokensOnly()
    {
        var (model, tokens, logProbs) = Fixture();
        int t = tokens.Length;
        TokenizedExample[] examples =
        [
            Example(tokens, t, i => i >= 10),                       // prompt of 10 tokens, answer to the end
            Example(tokens, t, i => i is >= 5 and < 9 or >= 15),    // same length (shares the forward), two trained spans
            Example(tokens, 16, i => i >= 4),                       // a shorter example: a forward of its own
        ];
        var result = MaskedLossEvaluator.Evaluate(model, new ByteTokenizer(), examples);

        double nats = 0;
        int count = 0;
        foreach (var e in examples)
        {
            var (n, c) = Reference(e, logProbs);
            nats += n;
            count += c;
        }
        Assert.Equal(3, result.Examples);
        Assert.Equal(count, result.TrainedTokens);
        Assert.Equal(nats / count, result.Loss, 1e-4);
        Assert.Equal(Math.Exp(nats / count), result.Perplexity, 1e-3);
        // Every fixture id is below 128: one byte per trained target.
        Assert.Equal(count, result.TargetBytes);
        Assert.Equal(nats / Math.Log(2) / count, result.BitsPerByte, 1e-4);

        // The mask matters: the mean over every position of the same examples is far from it.
        double all = 0;
        int allCount = 0;
        foreach (var e in examples)
            for (int i = 0; i + 1 < e.InputIds.Length; i++, allCount++) all -= logProbs[i][e.InputIds[i + 1]];
        Assert.True(Math.Abs(all / allCount - result.Loss) > 0.01, $"unmasked {all / allCount}, masked {result.Loss}");
    }

    [Fact]
    public void OneExamplePerForwardGivesTheSameLossAsBatches()
    {
        var (model, tokens, _) = Fixture();
        TokenizedExample[] examples = [Example(tokens, 24, i => i >= 3), Example(tokens, 24, i => i % 2 == 0), Example(tokens, 24, i => i > 20)];
        Assert.Single(MaskedLossEvaluator.Batches(examples, 1 << 20));
        Assert.Equal(3, MaskedLossEvaluator.Batches(examples, 1).Count());
        var batched = MaskedLossEvaluator.Evaluate(model, new ByteTokenizer(), examples);
        var single = MaskedLossEvaluator.Evaluate(model, new ByteTokenizer(), examples, batchTokens: 1);
        Assert.Equal(single.TrainedTokens, batched.TrainedTokens);
        Assert.Equal(single.TotalNats, batched.TotalNats, 1e-4);
    }

    [Fact]
    public void TargetsAreTheNextLabelAndTheFirstLabelIsNeverATarget()
    {
        int[] labels = [7, I, 3, 4, I, 9];
        var targets = DeepSeekSharp.Models.DeepSeekV3.DeepSeekModel.Targets(labels, DeepSeekSharp.Models.DeepSeekV3.SequenceBatch.Training(1, labels.Length), 0);
        Assert.Equal(3, targets.Count(t => t >= 0));
        Assert.Equal([-1, 3, 4, -1, 9, -1], targets);
    }

    [Fact]
    public void TargetBytesCountTextOnceAndSpecialTokensNotAtAll()
    {
        var tokenizer = new ByteTokenizer();
        int[] text = tokenizer.Encode("héllo wörld"); // é and ö are two byte tokens each
        // BOS, a prompt, the text trained, then EOS trained.
        int[] labels = [I, I, I, .. text, ByteTokenizer.Eos];
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount("héllo wörld"), MaskedLossEvaluator.TargetBytes(tokenizer, labels));
        // With the DeepSeek-V3 tokenizer (multi-byte tokens, special EOS): the bytes of the text, not of the token strings.
        var deepSeek = HfTokenizer.Load(Path.Combine(TestPaths.Shared, "data", "deepseek-v3-tokenizer", "tokenizer.json"));
        int[] ids = deepSeek.Encode("Natalia sold 48/2 = 24 clips — ¡sí!");
        int[] withEos = [I, .. ids, deepSeek.EosId!.Value];
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount("Natalia sold 48/2 = 24 clips — ¡sí!"), MaskedLossEvaluator.TargetBytes(deepSeek, withEos));
    }

    [Fact]
    public void AnIdOutsideTheVocabularyIsAnErrorNamingTheExample()
    {
        var (model, tokens, _) = Fixture();
        var bad = new TokenizedExample([1, 2, 500], [I, 2, 500]);
        var e = Assert.Throws<DeepSeekSharpException>(() => MaskedLossEvaluator.Evaluate(model, new ByteTokenizer(), [Example(tokens, 8, _ => true), bad]));
        Assert.StartsWith("example 2: token id 500 is outside the model's vocabulary", e.Message);
    }
}
