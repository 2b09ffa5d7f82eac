using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Autograd;

/// <summary>Finite-difference check of analytic gradients (central differences on a random projection of the output).</summary>
internal static class GradCheck
{
    public static Tensor Random(Random rng, float scale, params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        t.RequiresGrad = true;
        return t;
    }

    /// <summary>
    /// Checks d(Σ c·f(inputs))/d(input) for every input against central differences; probes up to
    /// <paramref name="probes"/> elements per input. Tolerance is relative to the gradient's max magnitude.
    /// </summary>
    public static void Check(Func<Tensor> f, Tensor[] inputs, int seed = 1, int probes = 24, float eps = 1e-2f, double tol = 2e-2)
    {
        var rng = new Random(seed);
        foreach (var x in inputs) x.Grad = null;
        var y = f();
        var c = new float[y.Length];
        for (int i = 0; i < c.Length; i++) c[i] = (float)(rng.NextDouble() * 2 - 1);
        var loss = Project(y, c);
        Backprop.Backward(loss);
        foreach (var x in inputs)
        {
            Assert.NotNull(x.Grad);
            var analytic = x.Grad!.AsSpan(0, (int)x.Length).ToArray(); // a pooled gradient may be longer than x
            double maxAbs = 1e-6;
            foreach (var g in analytic) maxAbs = Math.Max(maxAbs, Math.Abs(g));
            int n = (int)x.Length;
            for (int p = 0; p < Math.Min(probes, n); p++)
            {
                int i = n <= probes ? p : rng.Next(n);
                float orig = x.Data[i];
                double plus, minus;
                using (GradMode.NoGrad())
                {
                    x.Data[i] = orig + eps; plus = Dot(f(), c);
                    x.Data[i] = orig - eps; minus = Dot(f(), c);
                }
                x.Data[i] = orig;
                double numeric = (plus - minus) / (2 * eps);
                double err = Math.Abs(numeric - analytic[i]) / Math.Max(maxAbs, Math.Abs(numeric));
                Assert.True(err < tol, $"{x}: element {i}: analytic {analytic[i]} vs numeric {numeric} (rel err {err:g3})");
            }
        }
    }

    private static double Dot(Tensor y, float[] c)
    {
        double s = 0;
        for (int i = 0; i < c.Length; i++) s += (double)y.Data[i] * c[i];
        return s;
    }

    private static Tensor Project(Tensor y, float[] c)
    {
        // Σ c·y via ops so the graph reaches every input: reshape to [1, n] and a Linear with weight c [1, n].
        var flat = Functional.Reshape(y, 1, (int)y.Length);
        var w = Tensor.FromArray(c, 1, c.Length);
        return Functional.Reshape(Functional.Linear(flat, w), 1);
    }
}
