using DeepSeekSharp.Optim;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training;

/// <summary>
/// The optimizer the trainer sees: one or two optimizers updated together (replicated AdamW; or ZeRO-1's dense part
/// sharded over the world and the routed experts' part sharded over the expert-data-parallel group), whose state a
/// checkpoint holds as whole-model moments: the experts' gathered from the ranks that update them
/// (<see cref="ExpertParallel.GatherState"/>), and on resume each rank keeps only the moments of what it trains, from a
/// checkpoint written by any layout.
/// </summary>
public sealed class ExpertParallelOptimizer(IReadOnlyList<IOptimizer> parts, ExpertParallel experts, IReadOnlyList<(string Name, Parameter Parameter)> parameters) : IOptimizer
{
    public long Step => parts[0].Step;

    /// <summary>The first part (replicated AdamW, or ZeRO-1's dense part).</summary>
    public IOptimizer Main => parts[0];

    public void Update(float learningRate)
    {
        foreach (var part in parts) part.Update(learningRate);
    }

    /// <summary>
    /// In the model's parameter order, as one process's AdamW lists them (the checkpoint file has the same bytes for
    /// any layout). Every rank calls it together (the sharded parts and the experts' owners send their moments).
    /// </summary>
    public IEnumerable<(string Name, float[] M, float[] V)> State()
    {
        var order = new Dictionary<string, int>();
        for (int i = 0; i < parameters.Count; i++) order[parameters[i].Name] = i;
        return experts.GatherState(parts.SelectMany(p => p.State()).ToList(), Step > 0).OrderBy(s => order.GetValueOrDefault(s.Name, int.MaxValue));
    }

    public void LoadState(long step, IReadOnlyDictionary<string, (float[] M, float[] V)> moments)
    {
        var trained = ExpertParallel.Trained(moments, parameters);
        foreach (var part in parts) part.LoadState(step, trained);
    }
}
