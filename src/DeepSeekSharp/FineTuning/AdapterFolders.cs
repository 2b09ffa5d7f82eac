using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.FineTuning;

/// <summary>
/// The adapter folders <c>--adapter DIR</c> and <c>dss merge</c> take, told apart by the files present: an ESFT adapter
/// has <c>expert_cfg.json</c> (<see cref="Esft.EsftAdapter"/>), a PEFT LoRA adapter <c>adapter_config.json</c>
/// (<see cref="Lora.LoraAdapters"/>).
/// </summary>
public static class AdapterFolders
{
    /// <summary>Checks that <paramref name="dir"/> is an adapter folder of either kind; one error line otherwise.</summary>
    public static void Require(string dir)
    {
        if (Directory.Exists(dir) && Esft.EsftAdapter.IsAdapterFolder(dir)) return;
        Lora.LoraInference.RequireAdapterFolder(dir);
    }

    /// <summary>Puts the adapter of <paramref name="dir"/> on <paramref name="model"/> for inference; returns what it did, in words.</summary>
    public static string Attach(DeepSeekModel model, string dir)
    {
        Require(dir);
        if (Esft.EsftAdapter.IsAdapterFolder(dir)) return Esft.EsftAdapter.Attach(model, dir).Summary;
        return $"LoRA on {Lora.LoraInference.Attach(model, dir).Adapters.Count} Linear(s), unmerged";
    }
}
