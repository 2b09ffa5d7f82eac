namespace DeepSeekSharp.Training;

/// <summary>
/// Learning-rate schedules scaled to the run's planned length (training.md). All start with a linear warm-up.
/// <list type="bullet">
/// <item><c>deepseek</c>: constant peak until 67.6% of steps (10T of 14.8T tokens in V3), cosine to 0.1·peak by
/// 96.6%, then 0.1·peak until 98.9%, then peak·7.3/220 (V3: 2.2e-4 → 2.2e-5 → 7.3e-6).</item>
/// <item><c>cosine</c>: cosine from peak to <c>MinLrRatio</c>·peak over the steps after warm-up.</item>
/// <item><c>wsd</c>: warm-up, stable, then linear decay to <c>MinLrRatio</c>·peak over the last <c>DecayFraction</c>.</item>
/// <item><c>constant</c>.</item>
/// </list>
/// </summary>
public sealed record LrSchedule(string Kind, float PeakLr, int WarmupSteps, int TotalSteps, float MinLrRatio = 0.1f, float DecayFraction = 0.2f)
{
    public static readonly string[] Kinds = ["deepseek", "cosine", "wsd", "constant"];

    /// <summary>The learning rate for (1-based) step <paramref name="step"/>.</summary>
    public float At(long step)
    {
        if (WarmupSteps > 0 && step <= WarmupSteps) return PeakLr * step / WarmupSteps;
        double total = Math.Max(1, TotalSteps);
        double frac = Math.Clamp(step / total, 0, 1);
        double after = Math.Clamp((step - WarmupSteps) / Math.Max(1.0, total - WarmupSteps), 0, 1);
        double min = PeakLr * MinLrRatio;
        return Kind switch
        {
            "constant" => PeakLr,
            "cosine" => (float)(min + (PeakLr - min) * 0.5 * (1 + Math.Cos(Math.PI * after))),
            "wsd" => frac < 1 - DecayFraction ? PeakLr : (float)(PeakLr - (PeakLr - min) * Math.Min(1, (frac - (1 - DecayFraction)) / DecayFraction)),
            "deepseek" => frac switch
            {
                < 0.676 => PeakLr,
                < 0.966 => (float)(0.1 * PeakLr + 0.9 * PeakLr * 0.5 * (1 + Math.Cos(Math.PI * (frac - 0.676) / (0.966 - 0.676)))),
                < 0.989 => 0.1f * PeakLr,
                _ => PeakLr * 7.3f / 220f,
            },
            _ => throw new DeepSeekSharpException($"lr_scheduler '{Kind}' is not one of {string.Join(", ", Kinds)}"),
        };
    }
}
