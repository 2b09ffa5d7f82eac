using DeepSeekSharp.Distributed;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training;

/// <summary>
/// One routed expert's trained parameters (gate, up and down weights) and the expert-parallel rank that holds it.
/// </summary>
/// <param name="Members">the expert's trained parameters, by checkpoint name</param>
/// <param name="Owner">the rank within its expert-parallel group that computes and updates it</param>
/// <param name="SourceGradients">on the owner under expert parallelism: per source rank of the group, the gradients
/// of its own weight copies (<see cref="ExpertShard"/>), laid out as the members; null otherwise</param>
public sealed record ExpertUnit(IReadOnlyList<(string Name, Parameter Parameter)> Members, int Owner, IReadOnlyList<FlatSegments>? SourceGradients);

/// <summary>
/// Expert parallelism (<c>expert_parallel_size: k</c>, docs/parallelism.md §7): the world splits into expert-parallel
/// groups of k consecutive ranks and, across them, expert-data-parallel groups (the ranks with the same position in
/// their group). Rank j of a group computes, updates and keeps AdamW state for the j-th contiguous block of E/k routed
/// experts of every MoE layer; the other experts stay allocated on it (they are the buffers the checkpoint's gather
/// fills) but are not trained there: no gradient, no moments, no reduction. With k = 1 every expert is local and the
/// object only lists the experts, whose gradients the data-parallel side reduces in their own buckets.
/// </summary>
public sealed class ExpertParallel : IDisposable
{
    private readonly ICommunicator _world;

    private ExpertParallel(ICommunicator world, int size, ICommunicator? group, ICommunicator expertData, List<ExpertUnit> units, ExpertTraffic traffic)
    {
        (_world, Size, Group, ExpertData, Units, Traffic) = (world, size, group, expertData, units, traffic);
    }

    /// <summary>k: ranks per expert-parallel group.</summary>
    public int Size { get; }

    /// <summary>The expert-parallel group (null when k = 1).</summary>
    public ICommunicator? Group { get; }

    /// <summary>The ranks holding the same experts, over which their gradients are reduced (the world when k = 1).</summary>
    public ICommunicator ExpertData { get; }

    /// <summary>This rank's position in its expert-parallel group.</summary>
    public int Rank => Group?.Rank ?? 0;

    /// <summary>Which expert-parallel group this rank is in (its consecutive ranks are [GroupIndex·k, +k)).</summary>
    public int GroupIndex => _world.Rank / Size;

    /// <summary>Every routed expert of every MoE layer (the MTP depths' included), in model order.</summary>
    public IReadOnlyList<ExpertUnit> Units { get; }

    /// <summary>Bytes this rank's exchanges sent to the other ranks of its group so far.</summary>
    public ExpertTraffic Traffic { get; }

    /// <summary>
    /// Splits the world into expert-parallel groups of <paramref name="size"/> consecutive ranks (on a cluster: the
    /// ranks of one node first) and expert-data-parallel groups across them; (null, world) for size 1. A collective:
    /// every rank calls it, before any rank waits elsewhere.
    /// </summary>
    public static (ICommunicator? Group, ICommunicator ExpertData) SplitWorld(ICommunicator world, int size)
    {
        if (size < 1 || world.Size % size != 0)
            throw new DeepSeekSharpException($"expert_parallel_size: {size} does not divide the {world.Size} rank(s) of this launch");
        if (size == 1) return (null, world);
        var group = world.Split(world.Rank / size, world.Rank);
        return (group, world.Split(world.Rank % size, world.Rank));
    }

    /// <summary>
    /// Lists the routed experts and, with groups of more than one rank (<see cref="SplitWorld"/>), gives every MoE layer
    /// its <see cref="ExpertShard"/> and stops training the experts other ranks hold. Call after the model's precision
    /// and freezing are final and before the optimizer and the data-parallel buckets are built. Takes ownership of the groups.
    /// </summary>
    public static ExpertParallel Create(ICommunicator world, (ICommunicator? Group, ICommunicator ExpertData) groups, DeepSeekModel model, WireFormat dispatch, WireFormat combine)
    {
        var (group, expertData) = groups;
        int size = group?.Size ?? 1;
        var traffic = new ExpertTraffic();
        var units = new List<ExpertUnit>();
        foreach (var (name, module) in model.NamedModules())
        {
            if (module is not Moe moe) continue;
            int experts = moe.Experts.Count;
            if (experts % size != 0)
                throw new DeepSeekSharpException($"expert_parallel_size: {size} does not divide the {experts} routed experts of {name}");
            int perRank = experts / size;
            ExpertShard? shard = null;
            if (size > 1)
            {
                foreach (var (pn, p) in moe.Experts.NamedParameters())
                    if (!p.RequiresGrad) throw new DeepSeekSharpException($"expert_parallel_size: {name}.experts.{pn} is frozen; expert parallelism trains every routed expert (no freezing, no ESFT)");
                moe.Shard = shard = new ExpertShard(group!, moe, dispatch, combine, traffic, name);
            }
            for (int e = 0; e < experts; e++)
            {
                var members = moe.Experts[e].NamedParameters($"{name}.experts.{e}.").Where(p => p.Parameter.RequiresGrad).ToList();
                int owner = e / perRank;
                List<FlatSegments>? sources = null;
                if (shard is not null && owner == group!.Rank)
                {
                    if (members.Count != 3) throw new DeepSeekSharpException($"expert_parallel_size: {name}.experts.{e} has {members.Count} trained parameters, expected gate, up and down weights");
                    sources = [];
                    for (int s = 0; s < size; s++)
                        sources.Add(new FlatSegments(shard.SourceWeights(s, e - shard.First).Select(t => (Memory<float>)t.Grad.AsMemory(0, (int)t.Length)).ToList()));
                }
                units.Add(new ExpertUnit(members, owner, sources));
            }
        }
        // Experts held elsewhere are not trained here (set last: the shards copied the trained flags above).
        if (size > 1)
            foreach (var unit in units.Where(u => u.Owner != group!.Rank))
                foreach (var (_, p) in unit.Members) p.RequiresGrad = false;
        return new ExpertParallel(world, size, group, expertData, units, traffic);
    }

    /// <summary>Whether this rank computes and updates <paramref name="unit"/>.</summary>
    public bool IsLocal(ExpertUnit unit) => unit.Owner == Rank;

    /// <summary>
    /// Copies every expert's current weights from the rank holding it to the other ranks of its group, so rank 0 writes
    /// the whole model (checkpoints are the same HF folder a single process writes). Every rank calls it.
    /// </summary>
    public void GatherWeights()
    {
        if (Group is null) return;
        foreach (var unit in Units)
            foreach (var (_, p) in unit.Members) Group.Broadcast(p.Span, unit.Owner);
    }

    /// <summary>
    /// Whole-parameter moments of every expert (each from the rank that updates it) added to this rank's own state:
    /// the checkpoint's optimizer file, as one process writes it. Every rank calls it; <paramref name="anyStep"/> false
    /// (no update yet) returns <paramref name="local"/> unchanged.
    /// </summary>
    public List<(string Name, float[] M, float[] V)> GatherState(IEnumerable<(string Name, float[] M, float[] V)> local, bool anyStep)
    {
        var mine = local.ToList();
        if (Group is null || !anyStep) return mine;
        var byName = mine.ToDictionary(s => s.Name);
        var expertNames = Units.SelectMany(u => u.Members.Select(m => m.Name)).ToHashSet();
        var result = mine.Where(s => !expertNames.Contains(s.Name)).ToList();
        foreach (var unit in Units)
            foreach (var (name, p) in unit.Members)
            {
                float[] m, v;
                if (IsLocal(unit))
                {
                    if (!byName.TryGetValue(name, out var own)) throw new InvalidOperationException($"no optimizer state for the local expert weight {name}");
                    (m, v) = (own.M, own.V);
                }
                else (m, v) = (new float[p.Length], new float[p.Length]);
                Group.Broadcast<float>(m, unit.Owner);
                Group.Broadcast<float>(v, unit.Owner);
                result.Add((name, m, v));
            }
        return result;
    }

    /// <summary>The moments this rank keeps of a checkpoint's (any layout's) whole-model moments: those of the parameters it trains.</summary>
    public static IReadOnlyDictionary<string, (float[] M, float[] V)> Trained(IReadOnlyDictionary<string, (float[] M, float[] V)> moments,
        IEnumerable<(string Name, Parameter Parameter)> parameters)
    {
        var trained = parameters.Where(p => p.Parameter.RequiresGrad).Select(p => p.Name).ToHashSet();
        return moments.Where(kv => trained.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
    }

    public void Dispose()
    {
        if (Group is null) return;
        ExpertData.Dispose();
        Group.Dispose();
    }
}
