using DeepSeekSharp.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Optim;

/// <summary>
/// AdamW with decoupled weight decay (training.md defaults: β1 0.9, β2 0.95, ε 1e-8, decay 0.1 on parameters
/// whose <see cref="Parameter.WeightDecay"/> is set; norms and embeddings are not decayed). Frozen parameters
/// (RequiresGrad false) are skipped; a parameter without a gradient this step is updated with zeros. Moments are fp32 here.
/// </summary>
public sealed class AdamW
{
    private readonly List<(string Name, Parameter P)> _params;
    private readonly Dictionary<Parameter, (float[] M, float[] V)> _state = new(ReferenceEqualityComparer.Instance);

    public AdamW(IEnumerable<(string Name, Parameter P)> parameters) { _params = parameters.ToList(); }

    public float Beta1 { get; init; } = 0.9f;
    public float Beta2 { get; init; } = 0.95f;
    public float Eps { get; init; } = 1e-8f;
    public float WeightDecay { get; init; } = 0.1f;

    /// <summary>Number of steps taken (bias correction uses it).</summary>
    public long Step { get; private set; }

    public void Update(float learningRate)
    {
        Step++;
        float bc1 = 1f - MathF.Pow(Beta1, Step), bc2 = 1f - MathF.Pow(Beta2, Step);
        float[] scratch = [];
        foreach (var (_, p) in _params)
        {
            if (!p.RequiresGrad) continue;
            int n = (int)p.Length;
            // A parameter no token reached this step (an idle expert) is updated with a zero gradient, as with
            // zero_grad(set_to_none=False): moments decay and decoupled decay applies, the same in a resumed run.
            p.Grad ??= new float[n];
            if (!_state.TryGetValue(p, out var st)) _state[p] = st = (new float[n], new float[n]);
            if (scratch.Length < n) scratch = new float[n];
            var g = p.Grad.AsSpan(0, n);
            var m = st.M.AsSpan(0, n);
            var v = st.V.AsSpan(0, n);
            var w = p.Span;
            var tmp = scratch.AsSpan(0, n);
            // m = β1·m + (1−β1)·g ; v = β2·v + (1−β2)·g²
            TensorPrimitives.Multiply(m, Beta1, m);
            TensorPrimitives.MultiplyAdd(g, 1f - Beta1, m, m);
            TensorPrimitives.Multiply(g, g, tmp);
            TensorPrimitives.Multiply(v, Beta2, v);
            TensorPrimitives.MultiplyAdd(tmp, 1f - Beta2, v, v);
            // w −= lr·(m̂ / (sqrt(v̂) + ε) + λ·w)
            if (p.WeightDecay && WeightDecay > 0) TensorPrimitives.Multiply(w, 1f - learningRate * WeightDecay, w);
            TensorPrimitives.Multiply(v, 1f / bc2, tmp);
            TensorPrimitives.Sqrt(tmp, tmp);
            TensorPrimitives.Add(tmp, Eps, tmp);
            TensorPrimitives.Divide(m, tmp, tmp);
            TensorPrimitives.MultiplyAdd(tmp, -learningRate / bc1, w, w);
        }
    }

    /// <summary>Restores the step count and the moments of named parameters (resume).</summary>
    public void LoadState(long step, IReadOnlyDictionary<string, (float[] M, float[] V)> moments)
    {
        Step = step;
        foreach (var (name, p) in _params)
            if (moments.TryGetValue(name, out var st))
            {
                if (st.M.Length != p.Length || st.V.Length != p.Length) throw new DeepSeekSharpException($"optimizer state for '{name}' has the wrong size");
                _state[p] = st;
            }
    }

    /// <summary>Moments per parameter name (for checkpointing).</summary>
    public IEnumerable<(string Name, float[] M, float[] V)> State()
    {
        foreach (var (name, p) in _params)
            if (_state.TryGetValue(p, out var st)) yield return (name, st.M, st.V);
    }
}
