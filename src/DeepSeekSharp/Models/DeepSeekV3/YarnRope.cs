namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// Rotary frequencies with optional YaRN scaling (model.md, "YaRN"), and the cos/sin tables the rope op reads
/// ([position, dr/2], grown on demand so a 163,840-position model costs nothing until it is used).
/// </summary>
public sealed class YarnRope
{
    private readonly object _gate = new();
    private float[] _cos = [], _sin = [];
    private int _cachedPositions;

    public YarnRope(DeepSeekConfig config)
    {
        RopeDim = config.QkRopeHeadDim;
        int half = RopeDim / 2;
        double theta = config.RopeTheta;
        Frequencies = new double[half];
        for (int i = 0; i < half; i++) Frequencies[i] = Math.Pow(theta, -2.0 * i / RopeDim);

        var rs = config.RopeScaling;
        IsYarnActive = IsYarnActiveFor(config);
        SoftmaxScale = (float)(1.0 / Math.Sqrt(config.QkHeadDim));
        if (!IsYarnActive) return;

        double s = rs!.Factor, l0 = rs.OriginalMaxPositionEmbeddings;
        double Corr(double rotations) => RopeDim * Math.Log(l0 / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = Math.Max(Math.Floor(Corr(rs.BetaFast)), 0);
        double high = Math.Min(Math.Ceiling(Corr(rs.BetaSlow)), RopeDim - 1);
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++)
        {
            double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
            double smooth = 1 - ramp;
            Frequencies[i] = Frequencies[i] / s * (1 - smooth) + Frequencies[i] * smooth;
        }
        double m = MScale(s, rs.MscaleAllDim);
        SoftmaxScale *= (float)(m * m);
        // HF scales cos/sin by m(mscale)/m(mscale_all_dim); 1 for every released config.
        CosSinScale = MScale(s, rs.Mscale) / m;
    }

    public int RopeDim { get; }

    public bool IsYarnActive { get; }

    /// <summary>Like the official code: YaRN applies only when the context is actually extended.</summary>
    public static bool IsYarnActiveFor(DeepSeekConfig config) =>
        config.RopeScaling is { Type: "yarn" } rs && config.MaxPositionEmbeddings > rs.OriginalMaxPositionEmbeddings;

    /// <summary>f_i after YaRN, i in [0, dr/2).</summary>
    public double[] Frequencies { get; }

    /// <summary>(dn+dr)^-0.5, times m² under YaRN.</summary>
    public float SoftmaxScale { get; }

    public double CosSinScale { get; } = 1.0;

    private static double MScale(double factor, double mscale) => factor <= 1 || mscale <= 0 ? 1.0 : 0.1 * mscale * Math.Log(factor) + 1.0;

    /// <summary>Tables covering positions [0, positions); thread-safe, grows by doubling.</summary>
    public (float[] Cos, float[] Sin) Tables(int positions)
    {
        lock (_gate)
        {
            if (positions > _cachedPositions)
            {
                int n = Math.Max(positions, Math.Max(64, _cachedPositions * 2));
                int half = RopeDim / 2;
                var cos = new float[n * half];
                var sin = new float[n * half];
                for (int p = 0; p < n; p++)
                    for (int i = 0; i < half; i++)
                    {
                        double angle = p * Frequencies[i];
                        cos[p * half + i] = (float)(Math.Cos(angle) * CosSinScale);
                        sin[p * half + i] = (float)(Math.Sin(angle) * CosSinScale);
                    }
                (_cos, _sin, _cachedPositions) = (cos, sin, n);
            }
            return (_cos, _sin);
        }
    }
}
