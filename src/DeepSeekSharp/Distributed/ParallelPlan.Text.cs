using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Distributed;

public sealed partial record ParallelPlan
{
    /// <summary>Binary units: 1 GiB = 2³⁰ bytes.</summary>
    public static string Bytes(double bytes) => bytes switch
    {
        >= 1L << 40 => (bytes / (1L << 40)).ToString("0.00", CultureInfo.InvariantCulture) + " TiB",
        >= 1L << 30 => (bytes / (1L << 30)).ToString("0.00", CultureInfo.InvariantCulture) + " GiB",
        >= 1L << 20 => (bytes / (1L << 20)).ToString("0.0", CultureInfo.InvariantCulture) + " MiB",
        >= 1L << 10 => (bytes / (1L << 10)).ToString("0.0", CultureInfo.InvariantCulture) + " KiB",
        _ => bytes.ToString("0", CultureInfo.InvariantCulture) + " B",
    };

    public string ToText()
    {
        var o = Options;
        var sb = new StringBuilder();
        void Line(string text) => sb.AppendLine(text);
        Line(string.Create(CultureInfo.InvariantCulture, $"parallel          {Layout}: {WorldSize:N0} ranks = {Stages} pipeline stage(s) × {RanksPerStage} ranks"));
        Line(string.Create(CultureInfo.InvariantCulture, $"batch             {o.GlobalBatch:N0} × {o.SequenceLength:N0} tokens = {TokensPerStep:N0} per step; per rank {TokensPerRank:N0} tokens in {MicroBatchesPerRank:N0} micro-batch(es) of {o.MicroBatch}"));
        Line($"precision         {o.Precision}, AdamW moments {o.AdamMoments}, EP dispatch {o.Dispatch}, combine {o.Combine}" +
            (o.RecomputeNorms || o.RecomputeMlaUp ? $"; recomputed: {string.Join(", ", new[] { o.RecomputeNorms ? "norms" : null, o.RecomputeMlaUp ? "MLA up-projections" : null }.OfType<string>())}" : ""));
        if (ExpectedGroupsPerToken > 0)
            Line(string.Create(CultureInfo.InvariantCulture,
                $"routing           a token's experts span {ExpectedGroupsPerToken:0.00} groups; it goes to {ExpectedRemoteRanksPerToken:0.00} other EP ranks (at most {MaxRemoteRanksPerToken}), {ExpectedRemoteNodesPerToken:0.00} other nodes of {o.RanksPerNode} ranks"));
        var peak = StagePlans[PeakStage];
        var m = peak.Memory;
        Line(string.Create(CultureInfo.InvariantCulture, $"per rank, stage {peak.Stage} (the largest): layers {peak.FirstLayer}..{peak.FirstLayer + peak.Layers - 1}{(peak.Head && peak.MtpDepths > 0 ? $" + {peak.MtpDepths} MTP" : "")}, {peak.DenseParameters:N0} dense + {peak.ExpertParametersPerRank:N0} expert parameters"));
        Line($"  weights fp32    {Bytes(m.WeightsFp32)}");
        if (m.Fp8Codes > 0) Line($"  fp8 copies      {Bytes(m.Fp8Codes)} E4M3 + {Bytes(m.Fp8Scales)} 128x128 scales");
        if (m.Bf16Copies > 0) Line($"  bf16 copies     {Bytes(m.Bf16Copies)}");
        Line($"  gradients fp32  {Bytes(m.Gradients)}");
        Line(string.Create(CultureInfo.InvariantCulture, $"  AdamW moments   {Bytes(m.OptimizerMoments)} ({peak.OptimizerElements:N0} elements{(Layout.Contains("zero=1", StringComparison.Ordinal) ? ", ZeRO-1 shards" : "")})"));
        Line(string.Create(CultureInfo.InvariantCulture, $"  activations     {Bytes(m.Activations)} ({peak.MicroBatchesInFlight} micro-batch(es) in flight)"));
        Line($"  total           {Bytes(m.Total)}");
        var busiest = StagePlans.MaxBy(s => s.Traffic.Total)!;
        var t = busiest.Traffic;
        Line($"sent per step, stage {busiest.Stage} (the busiest; each rank receives as much)");
        Line($"  DP reduce-scatter {Bytes(t.DpReduceScatter)}, allgather {Bytes(t.DpAllGather)}");
        if (t.EpDispatch + t.EpCombine > 0) Line($"  EP dispatch {Bytes(t.EpDispatch)}, combine {Bytes(t.EpCombine)} (forward and backward); {Bytes(t.EpCrossNode)} of it crosses nodes");
        if (t.Pipeline > 0) Line($"  PP boundaries {Bytes(t.Pipeline)}");
        Line($"  total           {Bytes(t.Total)}");
        if (StagePlans.Count > 1)
        {
            Line("stage  layers  memory/rank  sent/step");
            foreach (var s in StagePlans)
                Line(string.Create(CultureInfo.InvariantCulture, $"{s.Stage,5}  {s.Layers,6}  {Bytes(s.Memory.Total),11}  {Bytes(s.Traffic.Total),9}"));
        }
        return sb.ToString().TrimEnd();
    }
}
