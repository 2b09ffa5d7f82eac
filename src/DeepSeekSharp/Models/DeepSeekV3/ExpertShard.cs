using DeepSeekSharp.Autograd;
using DeepSeekSharp.Distributed;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>Bytes one rank sent to the other ranks of its expert-parallel group (forward and backward together).</summary>
public sealed class ExpertTraffic
{
    /// <summary>Token rows to the experts (forward) and output gradients to the experts (backward).</summary>
    public long DispatchBytes { get; set; }

    /// <summary>Expert outputs back (forward) and input gradients back (backward).</summary>
    public long CombineBytes { get; set; }
}

/// <summary>
/// One MoE layer's routed experts split over an expert-parallel group (docs/parallelism.md §7): this rank computes
/// experts [<see cref="First"/>, First + <see cref="Count"/>) for the token rows every rank of the group routes to
/// them. Each source rank's rows run through their own copy of the local experts' weight tensors
/// (<see cref="SourceWeights"/>: the same arrays, a separate gradient each), so the weight gradient of every source
/// micro-batch is formed apart, exactly as one process forms it, and joins the pairwise tree at its own global index.
/// </summary>
public sealed class ExpertShard
{
    private readonly ExpertLinear[][] _gate, _up, _down;

    /// <param name="group">the expert-parallel group (rank j holds the j-th block of experts)</param>
    /// <param name="moe">the layer; its experts must be fp32 Linears without adapters</param>
    public ExpertShard(ICommunicator group, Moe moe, WireFormat dispatch, WireFormat combine, ExpertTraffic traffic, string layerName)
    {
        int experts = moe.Experts.Count, k = group.Size;
        if (experts % k != 0)
            throw new DeepSeekSharpException($"expert_parallel_size: {k} does not divide the {experts} routed experts of {layerName}");
        (Group, Count, First, Dispatch, Combine, Traffic) = (group, experts / k, group.Rank * (experts / k), dispatch, combine, traffic);
        _gate = new ExpertLinear[k][];
        _up = new ExpertLinear[k][];
        _down = new ExpertLinear[k][];
        for (int s = 0; s < k; s++)
        {
            (_gate[s], _up[s], _down[s]) = (new ExpertLinear[Count], new ExpertLinear[Count], new ExpertLinear[Count]);
            for (int e = 0; e < Count; e++)
            {
                var expert = moe.Experts[First + e];
                _gate[s][e] = Copy(expert.GateProj, layerName);
                _up[s][e] = Copy(expert.UpProj, layerName);
                _down[s][e] = Copy(expert.DownProj, layerName);
            }
        }
    }

    public ICommunicator Group { get; }

    /// <summary>The first routed expert this rank holds.</summary>
    public int First { get; }

    /// <summary>Routed experts per rank (E / expert_parallel_size).</summary>
    public int Count { get; }

    public WireFormat Dispatch { get; }

    public WireFormat Combine { get; }

    public ExpertTraffic Traffic { get; }

    /// <summary>The weight tensors of <paramref name="source"/>'s copies for local expert <paramref name="expert"/> (gate, up, down).</summary>
    public IReadOnlyList<Tensor> SourceWeights(int source, int expert) =>
        [_gate[source][expert].Weight, _up[source][expert].Weight, _down[source][expert].Weight];

    /// <summary>All sources' copies in the grouped-GEMM order of the received rows: source-major, then local expert.</summary>
    internal (ExpertLinear[] Gate, ExpertLinear[] Up, ExpertLinear[] Down) SourceMajor() =>
        ([.. _gate.SelectMany(x => x)], [.. _up.SelectMany(x => x)], [.. _down.SelectMany(x => x)]);

    // A tensor over the parameter's own array with a gradient of its own: the update writes the array in place, so
    // every copy reads the current weights.
    private static ExpertLinear Copy(Nn.Linear linear, string layerName)
    {
        if (linear.AsExpertLinear() is not { Stored: null, Adapter: null } w)
            throw new DeepSeekSharpException($"expert_parallel_size: the routed experts of {layerName} must be fp32 Linears without adapters (precision: fp32, no LoRA)");
        var p = w.Weight;
        return new ExpertLinear(new Tensor(p.Shape, p.Data) { RequiresGrad = p.RequiresGrad, Grad = p.RequiresGrad ? new float[p.Length] : null });
    }
}
