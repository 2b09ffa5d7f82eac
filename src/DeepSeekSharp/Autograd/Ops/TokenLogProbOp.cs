using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// The log-probability of each row's target under softmax(h·Wᵀ / τ): logp[r] = z[r, y_r]/τ − logsumexp(z[r]/τ), 0 for
/// rows whose target is −1. Policy-gradient losses (GRPO) weight each sampled token's log-probability by its own
/// coefficient, so the output is per row [rows], not a mean. Like <see cref="LinearCrossEntropyOp"/>, the [rows, V]
/// logits are never kept: the forward keeps each row's log-sum-exp and the backward recomputes the logits block by
/// block, with d(logp[r])/d(z[r]) = (onehot(y_r) − softmax(z[r]/τ)) / τ.
/// </summary>
internal sealed class TokenLogProbOp : GradNode
{
    private readonly int[] _targets;
    private readonly float[] _lse;
    private readonly float _temperature;

    private TokenLogProbOp(Tensor h, Tensor w, int[] targets, float[] lse, float temperature) : base(h, w)
    {
        (_targets, _lse, _temperature) = (targets, lse, temperature);
    }

    /// <param name="h">[rows, H]</param>
    /// <param name="w">[V, H]</param>
    /// <param name="targets">[rows]: a token id, or −1 for a row that has none</param>
    /// <param name="temperature">τ &gt; 0: the logits are divided by it (the sampler's temperature)</param>
    /// <returns>[rows]</returns>
    public static Tensor Forward(Tensor h, Tensor w, int[] targets, float temperature = 1f)
    {
        int hidden = w.Shape[1], v = w.Shape[0];
        OpBase.CheckLastDim(h, hidden, "token log-probability input");
        int rows = OpBase.Rows(h);
        if (targets.Length != rows) throw new ArgumentException($"token log-probabilities: {targets.Length} targets for {rows} rows");
        if (!(temperature > 0) || !float.IsFinite(temperature)) throw new ArgumentException($"temperature must be positive and finite (got {temperature})");
        OpBase.CountTargets(targets, rows, v);
        var lse = new float[rows];
        var logp = Tensor.Zeros(rows);
        Blocks(h, w, targets, temperature, lse, logp.Data, null, null, null);
        return OpBase.Record(logp, () => new TokenLogProbOp(h, w, targets, lse, temperature), h, w);
    }

    /// <summary>
    /// One sweep over row blocks of logits = h·Wᵀ/τ. Forward (<paramref name="dlogp"/> null): each row's log-sum-exp
    /// into <paramref name="lse"/> and logp. Backward: dlogits[r] = dlogp[r]·(onehot − softmax) from the kept
    /// log-sum-exp, accumulated into dh and dW (each scaled by 1/τ).
    /// </summary>
    private static void Blocks(Tensor h, Tensor w, int[] targets, float temperature, float[] lse, float[]? logp, float[]? dlogp, float[]? dh, float[]? dw)
    {
        int hidden = w.Shape[1], v = w.Shape[0], rows = OpBase.Rows(h);
        var be = h.Backend;
        int block = Math.Min(rows, LinearCrossEntropyOp.BlockRows(v));
        float invT = 1f / temperature;
        float[] logits = StoragePool.Rent(block * v);
        try
        {
            for (int r0 = 0; r0 < rows; r0 += block)
            {
                int n = Math.Min(block, rows - r0);
                var hBlock = h.Span.Slice(r0 * hidden, n * hidden);
                var lBlock = logits.AsSpan(0, n * v);
                be.Gemm(false, true, n, v, hidden, invT, hBlock, hidden, w.Span, hidden, 0f, lBlock, v);   // z/τ [n, V]
                if (dlogp is null)
                {
                    be.CrossEntropyForward(lBlock, targets.AsSpan(r0, n), v, lse.AsSpan(r0, n));
                    for (int r = 0; r < n; r++)
                        if (targets[r0 + r] >= 0) logp![r0 + r] = lBlock[r * v + targets[r0 + r]] - lse[r0 + r];
                    continue;
                }
                // dlogits overwrite the block's logits row by row: each row needs only its own logits and lse.
                for (int r = 0; r < n; r++)
                {
                    var row = lBlock.Slice(r * v, v);
                    int t = targets[r0 + r];
                    float g = dlogp[r0 + r];
                    if (t < 0 || g == 0f) { row.Clear(); continue; }
                    float rowLse = lse[r0 + r];
                    // softmax − onehot, scaled by −g: d(logp)/dz = onehot − softmax.
                    System.Numerics.Tensors.TensorPrimitives.Subtract(row, rowLse, row);
                    System.Numerics.Tensors.TensorPrimitives.Exp(row, row);
                    row[t] -= 1f;
                    System.Numerics.Tensors.TensorPrimitives.Multiply(row, -g, row);
                }
                if (dh is not null) be.Gemm(false, false, n, hidden, v, invT, lBlock, v, w.Span, hidden, 1f, dh.AsSpan(r0 * hidden, n * hidden), hidden);
                if (dw is not null) be.Gemm(true, false, v, hidden, n, invT, lBlock, v, hBlock, hidden, 1f, dw, hidden);
            }
        }
        finally
        {
            StoragePool.Return(logits);
        }
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor h = Inputs[0], w = Inputs[1];
        Blocks(h, w, _targets, _temperature, _lse, null, dy, GradArrayOf(h), GradArrayOf(w));
    }
}
