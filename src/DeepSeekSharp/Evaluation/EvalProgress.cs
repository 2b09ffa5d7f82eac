namespace DeepSeekSharp.Evaluation;

/// <summary>How far an evaluation is: examples done of the total and the time spent, with the rate and what is left.</summary>
/// <param name="Done">examples finished</param>
/// <param name="Total">examples in the evaluation</param>
/// <param name="Elapsed">wall time since the evaluation started (model already loaded)</param>
public readonly record struct EvalProgress(int Done, int Total, TimeSpan Elapsed)
{
    /// <summary>Examples per second so far (0 before the first one is done).</summary>
    public double ExamplesPerSecond => Done == 0 || Elapsed <= TimeSpan.Zero ? 0 : Done / Elapsed.TotalSeconds;

    /// <summary>The time left at the rate so far; null until an example is done.</summary>
    public TimeSpan? Eta => ExamplesPerSecond > 0 ? TimeSpan.FromSeconds((Total - Done) / ExamplesPerSecond) : null;
}
