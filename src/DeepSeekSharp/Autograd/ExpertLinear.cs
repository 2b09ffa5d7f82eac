using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd;

/// <summary>
/// One projection (gate, up or down) of one routed expert as <see cref="Ops.GroupedExpertsOp"/> computes it:
/// y = x·Wᵀ (+ the low-rank path of <paramref name="Adapter"/>). W is the fp32 <paramref name="Weight"/> or, for a
/// frozen base kept as stored, <paramref name="Stored"/> (then <paramref name="Weight"/> is the Linear's meta
/// parameter, which only gives the shape).
/// </summary>
/// <param name="Weight">[out, in]</param>
public sealed record ExpertLinear(Tensor Weight, CompressedWeight? Stored = null, LowRankAdapter? Adapter = null)
{
    public int OutFeatures => Weight.Shape[0];

    public int InFeatures => Weight.Shape[1];

    /// <summary>Whether W's gradient is wanted (a stored weight never has one).</summary>
    public bool TrainsWeight => Stored is null && Weight.RequiresGrad;

    /// <summary>W as fp32 [out, in]: the parameter's own array, or a pooled copy widened from the stored form, which
    /// <see cref="ReleaseWeight"/> gives back. Widened per expert per use, so no fp32 copy of a stored base outlives
    /// the GEMMs that read it.</summary>
    internal float[] AcquireWeight()
    {
        if (Stored is not { } stored) return Weight.Data;
        int rows = stored.Rows, cols = stored.Cols;
        float[] wide = StoragePool.Rent(rows * cols);
        for (int r = 0; r < rows; r++) stored.DecodeRow(r, 0, wide.AsSpan(r * cols, cols));
        return wide;
    }

    internal void ReleaseWeight(float[] weight)
    {
        if (Stored is not null) StoragePool.Return(weight);
    }
}

/// <summary>
/// A LoRA-style low-rank path added to a projection: y += scale·B·A·drop(x), with the (optional) dropout on the
/// adapter's input only.
/// </summary>
/// <param name="A">[r, in]</param>
/// <param name="B">[out, r]</param>
/// <param name="Dropout">the mask of this micro-batch (training only), or null</param>
public sealed record LowRankAdapter(Tensor A, Tensor B, float Scale, DropoutMask? Dropout = null)
{
    public int Rank => A.Shape[0];
}
