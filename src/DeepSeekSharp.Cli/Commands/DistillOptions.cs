using System.CommandLine;
using DeepSeekSharp.Distillation;

namespace DeepSeekSharp.Cli.Commands;

/// <summary>The knowledge-distillation options of <c>dss grad</c> (Axolotl's names: kd_alpha, kd_ce_alpha, kd_temperature).</summary>
internal sealed class DistillOptions
{
    public Option<string?> Teacher { get; } = new("--teacher") { Description = "teacher model folder: the loss becomes the distillation loss towards it (same vocabulary)" };
    public Option<float> Alpha { get; } = new("--kd-alpha") { Description = "weight of τ²·KL(teacher ‖ student) (Axolotl's kd_alpha)", DefaultValueFactory = _ => 0.5f };
    public Option<float?> CeAlpha { get; } = new("--kd-ce-alpha") { Description = "weight of the cross-entropy on the labels (Axolotl's kd_ce_alpha; default 1 − kd-alpha)" };
    public Option<float> Temperature { get; } = new("--kd-temperature") { Description = "temperature τ of both distributions in the KL", DefaultValueFactory = _ => 1f };
    public Option<int?> TopK { get; } = new("--kd-top-k") { Description = "distil from the teacher's k most likely ids per position only (as an offline dump would)" };
    public Option<string> Tail { get; } = CreateTail();
    public Option<float> Beta { get; } = new("--kd-beta")
    {
        Description = "0 forward KL (default), 1 reverse KL, in between the generalised Jensen-Shannon divergence (Axolotl's and TRL's kd_beta)", DefaultValueFactory = _ => 0f,
    };

    private static Option<string> CreateTail()
    {
        var o = new Option<string>("--kd-tail") { Description = "top-k mass the teacher does not list: renormalize (drop it, Axolotl) or bucket (one extra category)", DefaultValueFactory = _ => "renormalize" };
        o.AcceptOnlyFromAmong("renormalize", "bucket");
        return o;
    }

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Teacher, Alpha, CeAlpha, Temperature, TopK, Tail, Beta }) cmd.Options.Add(o);
    }

    /// <summary>Refuses --kd-* options given without --teacher (they would be ignored).</summary>
    public void RequireTeacherFor(ParseResult r)
    {
        if (r.GetValue(Teacher) is not null) return;
        foreach (var o in new Option[] { Alpha, CeAlpha, Temperature, TopK, Tail, Beta })
            if (r.GetResult(o) is { Implicit: false }) throw new DeepSeekSharpException($"{o.Name}: needs --teacher");
    }

    public DistillationLoss Loss(ParseResult r)
    {
        float alpha = r.GetValue(Alpha);
        var loss = new DistillationLoss(alpha, r.GetValue(CeAlpha) ?? 1f - alpha, r.GetValue(Temperature),
            r.GetValue(Tail) == "bucket" ? TopKTail.Bucket : TopKTail.Renormalize, r.GetValue(Beta));
        loss.Validate("--kd-alpha/--kd-ce-alpha/--kd-temperature/--kd-beta");
        return loss;
    }
}
