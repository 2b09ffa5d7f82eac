using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// The low-rank paths (LoRA) of one projection of every routed expert, inside <see cref="GroupedExpertsOp"/>: for expert e
/// with rows X_e [c, in], Y_e += s·(drop(X_e)·Aᵀ)·Bᵀ. The forward is two grouped GEMMs over all adapted experts that
/// received tokens (U = drop(X)·Aᵀ, then Y += U·Bᵀ); U [S, r], kept scaled by s, is all the backward keeps. Experts
/// without an adapter on this projection add nothing. Every adapter of a projection has the same rank (the grouped
/// GEMM's leading dimensions are shared); <see cref="Supports"/> says whether a set of adapters qualifies.
/// <para>
/// Backward per expert, given dY_e [c, out]: dB += dY_eᵀ·U_e, G = dY_e·B [c, r], dA += s·Gᵀ·drop(X_e) and
/// dX_e += drop'(s·G·A), the dropout mask regenerated from its key.
/// </para>
/// </summary>
internal sealed class GroupedLowRank
{
    private readonly IReadOnlyList<ExpertLinear> _experts;
    private readonly int[] _offsets;
    private readonly int _rank, _in, _out;
    private float[]? _u;

    private GroupedLowRank(IReadOnlyList<ExpertLinear> experts, int[] offsets, int rank, float[] u)
    {
        (_experts, _offsets, _rank, _u) = (experts, offsets, rank, u);
        (_in, _out) = (experts[0].InFeatures, experts[0].OutFeatures);
    }

    /// <summary>Whether the adapters of <paramref name="experts"/> (one projection) share a rank, so one grouped call serves them.</summary>
    public static bool Supports(IReadOnlyList<ExpertLinear> experts)
    {
        int rank = 0;
        foreach (var e in experts)
            if (e.Adapter is { } a && (rank == 0 ? rank = a.Rank : rank) != a.Rank) return false;
        return true;
    }

    /// <summary>The A and B of every adapter, for the op's inputs.</summary>
    public static IEnumerable<Tensor> Parameters(IReadOnlyList<ExpertLinear> experts) =>
        experts.Where(e => e.Adapter is not null).SelectMany(e => new[] { e.Adapter!.A, e.Adapter.B });

    /// <summary>
    /// Adds the low-rank paths to <paramref name="y"/> [S, out] given the projection's input rows <paramref name="x"/>
    /// [S, in] (grouped by expert). Returns the state the backward needs, or null when no expert is adapted.
    /// </summary>
    public static GroupedLowRank? Forward(IBackend be, IReadOnlyList<ExpertLinear> experts, int[] active, int[] offsets, float[] x, float[] y)
    {
        if (!experts.Any(e => e.Adapter is not null)) return null;
        var adapted = active.Where(e => experts[e].Adapter is not null).ToArray();
        int rank = experts.First(e => e.Adapter is not null).Adapter!.Rank, inDim = experts[0].InFeatures, outDim = experts[0].OutFeatures;
        int s = offsets[^1];
        float[] u = StoragePool.Rent(Math.Max(1, s * rank));
        float[]? dropped = adapted.Any(e => experts[e].Adapter!.Dropout is not null) ? StoragePool.Rent(s * inDim) : null;
        var groups = new GemmGroup[adapted.Length];
        for (int i = 0; i < adapted.Length; i++)
        {
            int e = adapted[i], off = offsets[e], count = offsets[e + 1] - off;
            var adapter = experts[e].Adapter!;
            float[] input = x;
            if (adapter.Dropout is { } mask)
            {
                // The mask indexes the expert's own rows [count, in] from 0, as the expert's Linear would on its own.
                mask.Apply(x.AsSpan(off * inDim, count * inDim), 0, dropped.AsSpan(off * inDim, count * inDim));
                input = dropped!;
            }
            groups[i] = new GemmGroup(count, rank, inDim, input, off * inDim, adapter.A.Data, 0, u, off * rank);
        }
        be.GroupedGemm(false, true, 1f, 0f, inDim, inDim, rank, groups, []);
        if (dropped is not null) StoragePool.Return(dropped);
        for (int i = 0; i < adapted.Length; i++)
        {
            int e = adapted[i], off = offsets[e], count = offsets[e + 1] - off;
            var ue = u.AsSpan(off * rank, count * rank);
            TensorPrimitives.Multiply(ue, experts[e].Adapter!.Scale, ue);
            groups[i] = new GemmGroup(count, outDim, rank, u, off * rank, experts[e].Adapter!.B.Data, 0, y, off * outDim);
        }
        be.GroupedGemm(false, true, 1f, 1f, rank, rank, outDim, groups, []);
        return new GroupedLowRank(experts, offsets, rank, u);
    }

    /// <summary>
    /// The gradient arrays of the A and B of every adapted expert among <paramref name="active"/> (made here, on one
    /// thread, before the experts' backward runs concurrently). Experts that received no token get none: their
    /// gradient stays unset (zero), as on the module path, which never runs them.
    /// </summary>
    public IEnumerable<(Tensor Parameter, float[]? Grad)> GradientArrays(int[] active, Func<Tensor, float[]?> gradArrayOf)
    {
        foreach (int e in active)
            if (_experts[e].Adapter is { } a)
            {
                yield return (a.A, gradArrayOf(a.A));
                yield return (a.B, gradArrayOf(a.B));
            }
    }

    /// <summary>
    /// Expert <paramref name="e"/>'s part of the backward: its dA and dB (when wanted) and, when <paramref name="dxE"/>
    /// is not empty, its low-rank input gradient added to dxE [c, in].
    /// </summary>
    /// <param name="dyE">[c, out] the projection output's gradient</param>
    /// <param name="xE">[c, in] the projection's input rows (before dropout)</param>
    public void BackwardExpert(IBackend be, int e, ReadOnlySpan<float> dyE, ReadOnlySpan<float> xE, Span<float> dxE,
        IReadOnlyDictionary<Tensor, float[]?> grads)
    {
        if (_experts[e].Adapter is not { } adapter) return;
        float[] u = _u ?? throw new InvalidOperationException("grouped low-rank: backward after release");
        int off = _offsets[e], count = _offsets[e + 1] - off, r = _rank, inDim = _in, outDim = _out;
        if (count == 0) return;
        var uE = u.AsSpan(off * r, count * r);
        if (grads[adapter.B] is { } dB) be.Gemm(true, false, outDim, r, count, 1f, dyE, outDim, uE, r, 1f, dB, r);
        float[]? dA = grads[adapter.A];
        if (dA is null && dxE.IsEmpty) return;
        float[] g = StoragePool.Rent(count * r);                                  // G = dY_e·B [c, r]
        float[]? scratch = adapter.Dropout is not null ? StoragePool.Rent(count * inDim) : null;
        try
        {
            be.Gemm(false, false, count, r, outDim, 1f, dyE, outDim, adapter.B.Data, r, 0f, g, r);
            if (dA is not null)
            {
                ReadOnlySpan<float> input = xE;
                if (adapter.Dropout is { } mask)
                {
                    mask.Apply(xE, 0, scratch!);
                    input = scratch.AsSpan(0, count * inDim);
                }
                be.Gemm(true, false, r, inDim, count, adapter.Scale, g, r, input, inDim, 1f, dA, inDim);
            }
            if (dxE.IsEmpty) return;
            if (adapter.Dropout is { } dropout)
            {
                var dxd = scratch!.AsSpan(0, count * inDim);
                be.Gemm(false, false, count, inDim, r, adapter.Scale, g, r, adapter.A.Data, inDim, 0f, dxd, inDim);
                dropout.Apply(dxd, 0, dxd);
                TensorPrimitives.Add(dxE, dxd, dxE);
            }
            else be.Gemm(false, false, count, inDim, r, adapter.Scale, g, r, adapter.A.Data, inDim, 1f, dxE, inDim);
        }
        finally
        {
            StoragePool.Return(g);
            if (scratch is not null) StoragePool.Return(scratch);
        }
    }

    /// <summary>Gives U back to the pool (after the backward, or when no backward will run).</summary>
    public void Release()
    {
        if (_u is { } u) StoragePool.Return(u);
        _u = null;
    }
}
