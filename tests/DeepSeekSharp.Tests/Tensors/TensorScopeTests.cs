using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Tensors;

/// <summary>
/// A module written naively (no lifetime calls) run inside a <see cref="TensorScope"/>: its intermediates go back to the
/// pool when the scope ends, and the ones a recorded backward reads stay.
/// </summary>
[Collection(nameof(PoolCheckingCollection))]
public sealed class TensorScopeTests
{
    private const int Rows = 64, Dim = 512; // 32K floats per intermediate: above the pool's minimum length

    // norm → two projections → SwiGLU → projection, the way a model file states the math.
    private static Tensor NaiveMlp(Tensor x, Tensor norm, Tensor w1, Tensor w2, Tensor w3)
    {
        Tensor normed = Functional.RmsNorm(x, norm, 1e-6f);                        // [N, D]
        Tensor h = Functional.SiluMul(Functional.Linear(normed, w1), Functional.Linear(normed, w2)); // [N, D]
        return Functional.Linear(h, w3);                                          // [N, D]
    }

    private static Tensor Random(Random rng, bool requiresGrad, params int[] shape)
    {
        var data = new float[shape.Aggregate(1, (a, b) => a * b)];
        for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1) * 0.1f;
        return new Tensor(shape, data) { RequiresGrad = requiresGrad };
    }

    [Fact]
    public void NaiveModuleReturnsItsIntermediatesWhenTheScopeEnds()
    {
        var rng = new Random(5);
        var x = Random(rng, false, Rows, Dim); var norm = Random(rng, false, Dim);
        var w1 = Random(rng, false, Dim, Dim); var w2 = Random(rng, false, Dim, Dim); var w3 = Random(rng, false, Dim, Dim);
        using var _ = GradMode.NoGrad();
        StoragePool.Clear();
        Tensor y;
        long before = StoragePool.HeldBytes;
        using (var scope = TensorScope.Begin()) y = scope.Keep(NaiveMlp(x, norm, w1, w2, w3));
        long after = StoragePool.HeldBytes;
        // normed, the two projections and h (four [N, D] intermediates) are back in the pool; y is not.
        Assert.True(after - before >= 4L * Rows * Dim * sizeof(float), $"pool held {before} bytes before, {after} after");
        Assert.Equal(Rows * Dim, y.Span.Length);
        Assert.All(y.Span.ToArray(), v => Assert.True(float.IsFinite(v)));
    }

    // The same math as a Layer, the way a model file is written: no scope, no release, just the formula.
    private sealed class NaiveMlpLayer(Tensor norm, Tensor w1, Tensor w2, Tensor w3) : DeepSeekSharp.Nn.Layer
    {
        protected override Tensor Compute(Tensor x) => NaiveMlp(x, norm, w1, w2, w3);
    }

    [Fact]
    public void ALayerWrittenWithoutLifetimeCallsReturnsItsIntermediatesWhenItReturns()
    {
        var rng = new Random(7);
        var x = Random(rng, false, Rows, Dim);
        var layer = new NaiveMlpLayer(Random(rng, false, Dim), Random(rng, false, Dim, Dim), Random(rng, false, Dim, Dim), Random(rng, false, Dim, Dim));
        using var _ = GradMode.NoGrad();
        StoragePool.Clear();
        long before = StoragePool.HeldBytes;
        Tensor y = layer.Forward(x);
        long after = StoragePool.HeldBytes;
        Assert.True(after - before >= 4L * Rows * Dim * sizeof(float), $"pool held {before} bytes before, {after} after");
        Assert.False(y.IsMeta);
        // Run again: the four intermediates come from the pool, so it holds what it held before the first call.
        layer.Forward(x);
        Assert.True(StoragePool.HeldBytes >= after - 2L * Rows * Dim * sizeof(float), "the second call reused the pooled intermediates");
    }

    [Fact]
    public void TensorsARecordedBackwardReadsOutliveTheScopeAndGradientsMatch()
    {
        var rng = new Random(6);
        var x = Random(rng, true, Rows, Dim); var norm = Random(rng, true, Dim);
        var w1 = Random(rng, true, Dim, Dim); var w2 = Random(rng, true, Dim, Dim); var w3 = Random(rng, true, Dim, Dim);
        int[] targets = Enumerable.Range(0, Rows).Select(i => i * 7 % Dim).ToArray();

        Backprop.Backward(Functional.CrossEntropy(NaiveMlp(x, norm, w1, w2, w3), targets));
        float[] expected = x.Grad!.AsSpan(0, Rows * Dim).ToArray();
        x.Grad = null; norm.Grad = null; w1.Grad = null; w2.Grad = null; w3.Grad = null;

        StoragePool.CheckingMode = true;
        try
        {
            Tensor y;
            using (var scope = TensorScope.Begin()) y = scope.Keep(NaiveMlp(x, norm, w1, w2, w3));
            Backprop.Backward(Functional.CrossEntropy(y, targets));
            Assert.Equal(expected, x.Grad!.AsSpan(0, Rows * Dim).ToArray());
        }
        finally { StoragePool.CheckingMode = false; }
    }
}
