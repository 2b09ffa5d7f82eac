using System.CommandLine;
using System.Globalization;

namespace DeepSeekSharp.Cli.Commands;

/// <summary>Shared option parsing and the one place user errors become a one-line message and exit code 1.</summary>
internal static class CliCommon
{
    public static Option<string> ModelOption() => new("--model")
    {
        Description = "Hugging Face model folder (config.json + safetensors)",
        Required = true,
    };

    public static Option<string> TokensOption() => new("--tokens")
    {
        Description = "comma-separated token ids, e.g. 1,2,3",
        Required = true,
    };

    public static Option<string> WeightsOption()
    {
        var o = new Option<string>("--weights") { Description = "in-memory weight format for inference: fp32, bf16 or fp8 (E4M3, 128x128 blocks; an FP8 checkpoint's codes are used as stored)", DefaultValueFactory = _ => "fp32" };
        o.AcceptOnlyFromAmong("fp32", "bf16", "fp8");
        return o;
    }

    public static Option<string?> AdapterOption() => new("--adapter")
    {
        Description = "adapter folder applied on the base: PEFT LoRA (adapter_config.json + adapter_model.safetensors, unmerged) or ESFT (expert_cfg.json + the trained experts' safetensors), e.g. a LoRA or ESFT run's checkpoint-<step>",
    };

    /// <summary>Loads a model for inference with <paramref name="weights"/> storage and, when given, a LoRA adapter on top (unmerged).</summary>
    public static DeepSeekSharp.Models.DeepSeekV3.DeepSeekModel LoadForInference(string dir, string weights, string? adapter = null)
    {
        // The adapter folder is checked before the (possibly long) load of the base.
        if (adapter is not null) DeepSeekSharp.FineTuning.AdapterFolders.Require(adapter);
        var model = weights switch
        {
            "bf16" => DeepSeekSharp.Inference.InferenceWeights.Load(dir, DeepSeekSharp.Tensors.WeightStorage.Bf16),
            "fp8" => DeepSeekSharp.Inference.InferenceWeights.Load(dir, DeepSeekSharp.Tensors.WeightStorage.Fp8Block),
            _ => DeepSeekSharp.Models.DeepSeekV3.ModelCheckpoint.Load(dir),
        };
        if (adapter is not null) ApplyAdapter(model, adapter);
        return model;
    }

    /// <summary>Puts an adapter (LoRA or ESFT) on a loaded model and says so on stderr.</summary>
    public static void ApplyAdapter(DeepSeekSharp.Models.DeepSeekV3.DeepSeekModel model, string adapter) =>
        Console.Error.WriteLine($"adapter: {adapter}: {DeepSeekSharp.FineTuning.AdapterFolders.Attach(model, adapter)}");

    public static Option<string> OutOption(string what) => new("--out") { Description = what, Required = true };

    public static Option<bool> OverwriteOption() => new("--overwrite")
    {
        Description = "replace the model folder at --out if there is one (never the input; the new folder is written beside it and swapped in whole)",
    };

    /// <summary>Runs a command body; a user-facing error prints "error: ..." on one line and exits 1.</summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (DeepSeekSharpException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException)
        {
            Console.Error.WriteLine($"error: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
        catch (OutOfMemoryException)
        {
            Console.Error.WriteLine("error: out of memory");
            return 1;
        }
    }

    /// <summary>
    /// Runs a command body in this process's world (MPI's under a launcher, else a world of one) through <see cref="Run"/>.
    /// A rank that fails prints its one error line and aborts the whole job (MPI_Abort): finalising MPI there would wait
    /// forever for ranks blocked in a collective with it.
    /// </summary>
    public static int RunDistributed(Func<DeepSeekSharp.Distributed.ICommunicator, int> body) => Run(() =>
    {
        var world = DeepSeekSharp.Distributed.Communicator.CreateWorld();
        int code;
        try
        {
            code = body(world);
        }
        catch (Exception e) when (world.Size > 1)
        {
            string message = e is DeepSeekSharpException or IOException ? e.Message.ReplaceLineEndings(" ") : e.ToString();
            Console.Error.WriteLine($"error: rank {world.Rank} of {world.Size}: {message}");
            Console.Error.Flush();
            world.Abort(1);
            throw;
        }
        world.Dispose();
        return code;
    });

    public static int[] ParseTokens(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new DeepSeekSharpException("--tokens: no token ids given");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out ids[i]) || ids[i] < 0)
                throw new DeepSeekSharpException($"--tokens: '{parts[i]}' is not a non-negative integer token id");
        return ids;
    }

    public static void CheckTokens(int[] ids, int vocab)
    {
        foreach (int id in ids)
            if (id >= vocab) throw new DeepSeekSharpException($"--tokens: token id {id} is outside the vocabulary [0, {vocab})");
    }
}
