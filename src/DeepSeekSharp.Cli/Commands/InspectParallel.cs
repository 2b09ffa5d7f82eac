using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Distributed;
using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Cli.Commands;

/// <summary>
/// <c>dss inspect --parallel dp=…,ep=…,pp=…,zero=1 [--batch B --seq T …]</c>: per-rank memory and per-step communication
/// of a parallel layout (<see cref="ParallelPlan"/>), on paper.
/// </summary>
internal sealed class InspectParallel
{
    public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private readonly Option<string?> _layout = new("--parallel") { Description = "estimate per-rank memory and per-step communication for a layout: dp=N,ep=N,pp=N,zero=0|1 (world = dp·ep·pp; see docs/parallelism.md)" };
    private readonly Option<int?> _batch = new("--batch") { Description = "with --parallel: sequences per optimizer step, all ranks together (default: one micro-batch per rank)" };
    private readonly Option<int> _seq = new("--seq") { Description = "with --parallel: tokens per sequence", DefaultValueFactory = _ => 4096 };
    private readonly Option<int> _microBatch = new("--micro-batch") { Description = "with --parallel: sequences per micro-batch on one rank", DefaultValueFactory = _ => 1 };
    private readonly Option<string> _precision = new("--precision") { Description = "with --parallel: training precision fp32, bf16 or fp8", DefaultValueFactory = _ => "fp32" };
    private readonly Option<string?> _moments = new("--adam-moments") { Description = "with --parallel: AdamW moments fp32 or bf16 (default: bf16 for fp8, else fp32)" };
    private readonly Option<string?> _dispatch = new("--ep-dispatch") { Description = "with --parallel: what expert-parallel dispatch sends, fp32, bf16 or fp8 (default: the precision's; fp8 for fp8)" };
    private readonly Option<string?> _combine = new("--ep-combine") { Description = "with --parallel: what the combine sends back, fp32 or bf16 (default: bf16 for bf16 and fp8, else fp32)" };
    private readonly Option<bool> _recomputeNorms = new("--recompute-norms") { Description = "with --parallel: RMSNorm outputs rebuilt in the backward (config key recompute_norms)" };
    private readonly Option<bool> _recomputeMlaUp = new("--recompute-mla-up") { Description = "with --parallel: MLA's q and kv_b rebuilt in the backward (config key recompute_mla_up)" };
    private readonly Option<int> _ranksPerNode = new("--ranks-per-node") { Description = "with --parallel: ranks per node, for the cross-node share of expert traffic", DefaultValueFactory = _ => 8 };

    public static InspectParallel AddTo(Command command)
    {
        var options = new InspectParallel();
        options._precision.AcceptOnlyFromAmong("fp32", "bf16", "fp8");
        options._moments.AcceptOnlyFromAmong("fp32", "bf16");
        options._dispatch.AcceptOnlyFromAmong("fp32", "bf16", "fp8");
        options._combine.AcceptOnlyFromAmong("fp32", "bf16");
        foreach (Option o in (Option[])[options._layout, options._batch, options._seq, options._microBatch, options._precision, options._moments,
            options._dispatch, options._combine, options._ranksPerNode, options._recomputeNorms, options._recomputeMlaUp])
            command.Options.Add(o);
        return options;
    }

    public bool Requested(ParseResult r) => r.GetValue(_layout) is not null;

    public ParallelPlan Estimate(ParseResult r, DeepSeekModel model)
    {
        var layout = ParallelLayout.Parse(r.GetValue(_layout)!);
        string precision = r.GetValue(_precision)!;
        int microBatch = r.GetValue(_microBatch);
        var options = new ParallelPlanOptions(
            GlobalBatch: r.GetValue(_batch) ?? layout.DenseDataParallel * microBatch,
            SequenceLength: r.GetValue(_seq),
            MicroBatch: microBatch,
            Precision: precision,
            AdamMoments: r.GetValue(_moments) ?? (precision == "fp8" ? "bf16" : "fp32"),
            Dispatch: r.GetValue(_dispatch) ?? precision,
            Combine: r.GetValue(_combine) ?? (precision == "fp32" ? "fp32" : "bf16"),
            RanksPerNode: r.GetValue(_ranksPerNode),
            RecomputeNorms: r.GetValue(_recomputeNorms),
            RecomputeMlaUp: r.GetValue(_recomputeMlaUp));
        return ParallelPlan.Estimate(model, layout, options);
    }
}
