using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// Load-balance loss over groups of rows (training.md): with s' = s / Σ_e s (normalised scores),
/// f_e = N_r/(K·T)·Σ_t 1[e ∈ TopK(t)] and P_e = 1/T·Σ_t s'_{e,t}, L = α·Σ_e f_e·P_e averaged over groups.
/// Groups are sequences (DeepSeek-V3's sequence-wise loss) or the whole batch (the classic aux loss).
/// f is a constant; the gradient flows through P into the scores.
/// </summary>
internal sealed class BalanceLossOp : GradNode
{
    private readonly float[] _f; // [groups, E]
    private readonly int _groupRows;
    private readonly float _alpha;

    private BalanceLossOp(Tensor scores, float[] f, int groupRows, float alpha) : base(scores)
    {
        (_f, _groupRows, _alpha) = (f, groupRows, alpha);
    }

    public static Tensor Forward(Tensor scores, int[] idx, int k, int groupRows, float alpha)
    {
        int e = scores.Shape[^1], n = OpBase.Rows(scores);
        if (groupRows <= 0 || n % groupRows != 0) throw new ArgumentException($"balance loss: {n} rows do not split into groups of {groupRows}");
        int groups = n / groupRows;
        var f = new float[groups * e];
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++) f[(t / groupRows) * e + idx[t * k + j]] += (float)e / (k * groupRows);
        var s = scores.Span;
        double loss = 0;
        for (int t = 0; t < n; t++)
        {
            var row = s.Slice(t * e, e);
            float sum = 0;
            foreach (float v in row) sum += v;
            int g = t / groupRows;
            for (int i = 0; i < e; i++) loss += f[g * e + i] * row[i] / sum / groupRows;
        }
        var y = Tensor.FromArray([(float)(alpha * loss / groups)], 1);
        return OpBase.Record(y, () => new BalanceLossOp(scores, f, groupRows, alpha), scores);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor scores = Inputs[0];
        if (GradOf(scores) is not { IsEmpty: false } ds) return;
        int e = scores.Shape[^1], n = OpBase.Rows(scores), groups = n / _groupRows;
        var s = scores.Span;
        float c = dy[0] * _alpha / (groups * _groupRows);
        for (int t = 0; t < n; t++)
        {
            var row = s.Slice(t * e, e);
            float sum = 0;
            foreach (float v in row) sum += v;
            int g = t / _groupRows;
            // L ∝ Σ_i f_i·s_i/S  ⇒  ∂/∂s_j = (f_j − Σ_i f_i·s_i/S)/S
            float dot = 0;
            for (int i = 0; i < e; i++) dot += _f[g * e + i] * row[i];
            dot /= sum;
            for (int j = 0; j < e; j++) ds[t * e + j] += c * (_f[g * e + j] - dot) / sum;
        }
    }
}
