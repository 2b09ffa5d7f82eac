using System.CommandLine;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Distillation;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss grad</c>: the training loss of one sequence (or, with --teacher, its distillation loss) and the gradient of every trainable weight.</summary>
internal static class GradCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelOption();
        var tokens = CliCommon.TokensOption();
        var mtpWeight = new Option<float>("--mtp-weight") { Description = "weight W of the depth-1 MTP loss (0 = main loss only)", DefaultValueFactory = _ => 0f };
        var output = CliCommon.OutOption("output .safetensors file ('loss' and 'grad.<HF weight name>')");
        var kd = new DistillOptions();
        var cmd = new Command("grad", "Compute the next-token loss (+ W·MTP loss; or the distillation loss towards --teacher) and write it with all weight gradients") { model, tokens, mtpWeight, output };
        kd.AddTo(cmd);
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int[] ids = CliCommon.ParseTokens(r.GetValue(tokens)!);
            if (ids.Length < 2) throw new DeepSeekSharpException("--tokens: need at least 2 tokens for a next-token loss");
            string dir = r.GetValue(model)!;
            var m = ModelCheckpoint.Load(dir);
            CliCommon.CheckTokens(ids, m.Config.VocabSize);
            float w = r.GetValue(mtpWeight);
            if (!float.IsFinite(w) || w < 0) throw new DeepSeekSharpException("--mtp-weight must be a finite number ≥ 0");
            if (w > 0 && m.MtpModules.Count == 0) throw new DeepSeekSharpException($"{dir}: --mtp-weight given but the model has no MTP layers");
            kd.RequireTeacherFor(r);
            var batch = SequenceBatch.Training(1, ids.Length);
            var total = r.GetValue(kd.Teacher) is { } teacherDir
                ? DistillGrad.Loss(m, teacherDir, ids, batch, w, kd.Loss(r), r.GetValue(kd.TopK))
                : LanguageModelLoss.Compute(m, ids, batch, w, w > 0 ? 1 : 0).Total;
            Backprop.Backward(total);
            var outputs = new List<(string, int[], float[])> { ("loss", [1], [total.Data[0]]) };
            foreach (var (name, p) in m.NamedParameters())
            {
                if (!p.RequiresGrad) continue;
                outputs.Add(("grad." + name, p.Shape, p.Grad ?? new float[p.Length]));
            }
            OutputFile.WriteF32(r.GetValue(output)!, outputs, dir);
            return 0;
        }));
        return cmd;
    }
}
