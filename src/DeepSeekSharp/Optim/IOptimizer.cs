namespace DeepSeekSharp.Optim;

/// <summary>
/// What the trainer and the checkpoints need of an optimizer: one update per step, its step count, and its state as
/// whole-parameter moments by name (the checkpoint format, whatever the optimizer keeps in memory).
/// </summary>
public interface IOptimizer
{
    /// <summary>Number of steps taken (bias correction uses it).</summary>
    long Step { get; }

    /// <summary>Applies one update from the parameters' (reduced, clipped) gradients.</summary>
    void Update(float learningRate);

    /// <summary>
    /// Moments per parameter name, whole parameters, as fp32. A sharded optimizer gathers them here, so every rank of
    /// its group must call this together.
    /// </summary>
    IEnumerable<(string Name, float[] M, float[] V)> State();

    /// <summary>Restores the step count and the moments of named parameters (resume); every trained parameter needs
    /// moments once <paramref name="step"/> &gt; 0.</summary>
    void LoadState(long step, IReadOnlyDictionary<string, (float[] M, float[] V)> moments);
}
