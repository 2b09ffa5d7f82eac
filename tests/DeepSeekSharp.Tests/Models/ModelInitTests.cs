using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Tests.Models;

public sealed class ModelInitTests
{
    private static DeepSeekModel Tiny(int seed)
    {
        var model = new DeepSeekModel(DeepSeekConfig.Parse(Presets.TinyV3), materialize: true);
        ModelInit.InitializeRandom(model, seed);
        return model;
    }

    [Fact]
    public void AnUlpNudgeMovesEveryMatrixElementByExactlyThatManyUlpsAndLeavesNormsAlone()
    {
        var plain = Tiny(3);
        var nudged = Tiny(3);
        ModelInit.NudgeMatrices(nudged, 2);
        var reference = plain.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Span.ToArray());
        int matrices = 0;
        foreach (var (name, p) in nudged.NamedParameters())
        {
            float[] before = reference[name];
            var after = p.Span;
            if (p.Rank < 2)
            {
                Assert.Equal(before, after.ToArray());
                continue;
            }
            matrices++;
            for (int i = 0; i < before.Length; i++)
            {
                // Independent of the implementation: count representable floats between the two values via their bits.
                int distance = (int)(BitConverter.SingleToInt32Bits(after[i]) - (long)BitConverter.SingleToInt32Bits(before[i]));
                int expected = (i & 1) == 0 ? 2 : -2;
                if (before[i] < 0) expected = -expected; // negative floats count their bits the other way
                Assert.True(distance == expected, $"{name}[{i}]: {before[i]:R} → {after[i]:R}");
            }
        }
        Assert.True(matrices > 10);
    }
}
