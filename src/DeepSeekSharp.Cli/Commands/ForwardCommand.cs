using System.CommandLine;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss forward</c>: logits (and depth-1 MTP logits) of one sequence, written as safetensors.</summary>
internal static class ForwardCommand
{
    public static Command Create()
    {
        var model = CliCommon.ModelOption();
        var tokens = CliCommon.TokensOption();
        var mtp = new Option<bool>("--mtp") { Description = "also write mtp_logits [T-1, vocab] of MTP depth 1" };
        var output = CliCommon.OutOption("output .safetensors file (F32 'logits' [T, vocab], optional 'mtp_logits')");
        var weights = CliCommon.WeightsOption();
        var adapter = CliCommon.AdapterOption();
        var device = CudaCommand.DeviceOption();
        var cmd = new Command("forward", "Run the model on one sequence and write its logits") { model, tokens, mtp, weights, adapter, device, output };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int[] ids = CliCommon.ParseTokens(r.GetValue(tokens)!);
            string dir = r.GetValue(model)!;
            using var onDevice = CudaCommand.UseDevice(r.GetValue(device)!);
            var m = CliCommon.LoadForInference(dir, r.GetValue(weights)!, r.GetValue(adapter));
            CliCommon.CheckTokens(ids, m.Config.VocabSize);
            bool withMtp = r.GetValue(mtp);
            if (withMtp && m.MtpModules.Count == 0) throw new DeepSeekSharpException($"{dir}: --mtp given but the model has no MTP layers (num_nextn_predict_layers = 0)");
            if (withMtp && ids.Length < 2) throw new DeepSeekSharpException("--mtp needs at least 2 tokens");
            ModelOutput o;
            using (GradMode.NoGrad()) o = m.Forward(ids, SequenceBatch.Training(1, ids.Length), withMtp ? 1 : 0);
            int t = ids.Length, v = m.Config.VocabSize;
            var outputs = new List<(string, int[], float[])> { ("logits", [t, v], o.Logits.Span.ToArray()) };
            if (withMtp) outputs.Add(("mtp_logits", [t - 1, v], o.MtpLogits[0].Span[..((t - 1) * v)].ToArray()));
            OutputFile.WriteF32(r.GetValue(output)!, outputs, dir);
            return 0;
        }));
        return cmd;
    }
}
