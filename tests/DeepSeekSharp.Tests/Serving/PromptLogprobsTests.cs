using System.Globalization;
using System.Net;
using System.Text.Json;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.FineTuning;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.Serving;

/// <summary>
/// vLLM's scoring protocol on <c>/v1/completions</c>: <c>echo</c> with <c>max_tokens: 0</c> and <c>logprobs</c> or
/// <c>prompt_logprobs</c>, sent as Axolotl's online distillation collator sends it. The served figures are the model's own
/// forward's, bit for bit: the same floats a <c>dss distill dump</c> of the model stores.
/// </summary>
public sealed class PromptLogprobsTests(TinyServer server) : IClassFixture<TinyServer>
{
    private const string Completions = "/v1/completions";
    private static readonly int[] First = [82, 79, 77, 69, 79, 58, 32, 104, 105, 33], Second = [65, 66, 67, 10, 68];

    /// <summary>The model's top-k of a sequence as a dump stores it: the teacher forward of the sequence alone.</summary>
    private KdSequence Dumped(int[] ids, int k) =>
        TeacherDumper.TopK(server.Model, new TokenizedExample(ids, ids), k);

    [Fact]
    public async Task AxolotlsOnlineTeacherRequestGetsTheDumpsFloatsBitForBit()
    {
        const int K = 8;
        // Exactly the body of Axolotl's OnlineTeacherCollator.fetch_online_logprobs_vllm.
        var (status, response) = await server.Post(Completions,
            $$"""{"prompt": [[{{string.Join(",", First)}}], [{{string.Join(",", Second)}}]], "max_tokens": 0, "echo": true, "prompt_logprobs": {{K}}}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var choices = response.GetProperty("choices");
        Assert.Equal(2, choices.GetArrayLength());
        int vocab = server.Model.Config.VocabSize;
        foreach (var (choice, ids) in choices.EnumerateArray().Zip([First, Second]))
        {
            Assert.Equal(server.Tokenizer.Decode(ids), choice.GetProperty("text").GetString());
            Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
            var rows = choice.GetProperty("prompt_logprobs");
            Assert.Equal(ids.Length, rows.GetArrayLength());
            Assert.Equal(JsonValueKind.Null, rows[0].ValueKind);
            var dumped = Dumped(ids, K);
            // Independent of the scoring code: the model's plain forward, log-softmax in float64.
            var logits = server.Model.Forward(ids, SequenceBatch.Training(1, ids.Length)).Logits;
            for (int j = 1; j < ids.Length; j++)
            {
                var entries = rows[j].EnumerateObject().ToList();
                // The prompt token first (vLLM's order), then the K most likely in rank order.
                Assert.Equal(ids[j].ToString(CultureInfo.InvariantCulture), entries[0].Name);
                var listed = entries.Select(e => (Id: int.Parse(e.Name, CultureInfo.InvariantCulture), Logprob: (float)e.Value.GetProperty("logprob").GetDouble(),
                    Rank: e.Value.GetProperty("rank").GetInt32(), Text: e.Value.GetProperty("decoded_token").GetString())).ToList();
                var top = listed.Where(e => e.Rank <= K).OrderBy(e => e.Rank).ToList();
                Assert.Equal(Enumerable.Range(1, K), top.Select(e => e.Rank));
                Assert.Equal(dumped.Ids.AsSpan((j - 1) * K, K).ToArray(), top.Select(e => e.Id).ToArray());
                Assert.Equal(dumped.LogProbs.AsSpan((j - 1) * K, K).ToArray(), top.Select(e => e.Logprob).ToArray()); // bitwise: float equality
                Assert.InRange(listed.Count, K, K + 1);

                var row = logits.Span.Slice((j - 1) * vocab, vocab).ToArray().Select(z => (double)z).ToArray();
                double max = row.Max(), lse = max + Math.Log(row.Sum(z => Math.Exp(z - max)));
                Assert.Equal(row[ids[j]] - lse, listed[0].Logprob, 5);
                int at = top.FindIndex(e => e.Id == ids[j]);
                Assert.Equal(at >= 0 ? at + 1 : row.Count(z => z >= row[ids[j]]), listed[0].Rank);
                Assert.Equal(server.Tokenizer.Decode([ids[j]]), listed[0].Text);
            }
        }
    }

    [Fact]
    public async Task EchoWithLogprobsAndNoNewTokensReturnsThePromptsLogprobs()
    {
        const int N = 3;
        string text = server.Tokenizer.Decode(First);
        var (status, byText) = await server.Post(Completions, $$"""{"prompt": {{JsonSerializer.Serialize(text)}}, "max_tokens": 0, "echo": true, "logprobs": {{N}}}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var (_, byIds) = await server.Post(Completions, $$"""{"prompt": [{{string.Join(",", First)}}], "max_tokens": 0, "echo": true, "logprobs": {{N}}}""");
        var dumped = Dumped(First, N);
        foreach (var response in new[] { byText, byIds })
        {
            var choice = response.GetProperty("choices")[0];
            Assert.Equal(text, choice.GetProperty("text").GetString());
            var logprobs = choice.GetProperty("logprobs");
            Assert.Equal(First, logprobs.GetProperty("tokens").EnumerateArray().Select(t => server.TokenId(t.GetString()!)).ToArray());
            Assert.Equal(Enumerable.Range(0, First.Length), logprobs.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()));
            var tokenLogprobs = logprobs.GetProperty("token_logprobs");
            var top = logprobs.GetProperty("top_logprobs");
            Assert.Equal(JsonValueKind.Null, tokenLogprobs[0].ValueKind);
            Assert.Equal(JsonValueKind.Null, top[0].ValueKind);
            for (int j = 1; j < First.Length; j++)
            {
                var listed = top[j].EnumerateObject().ToDictionary(p => server.TokenId(p.Name), p => (float)p.Value.GetDouble());
                for (int i = 0; i < N; i++)
                    Assert.Equal(dumped.LogProbs[(j - 1) * N + i], listed[dumped.Ids[(j - 1) * N + i]]); // bitwise
                Assert.InRange(listed.Count, N, N + 1);
                Assert.Equal(listed[First[j]], (float)tokenLogprobs[j].GetDouble());
            }
        }
    }

    [Fact]
    public async Task AskingForMoreThanTheServersCapIsVllmsError()
    {
        var (status, body) = await server.Post(Completions, """{"prompt": [[1, 2, 3]], "max_tokens": 0, "echo": true, "prompt_logprobs": 64}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("Requested prompt logprobs of 64, which is greater than max allowed: 20", body.GetProperty("error").GetProperty("message").GetString());
    }
}
