namespace DeepSeekSharp.IO.HfCheckpoint;

/// <summary>
/// The one rule for every command that writes a model folder (<c>dss init</c>, <c>quantize</c>, <c>dequantize</c>;
/// training checkpoints follow it through their run folder): the output is never one of the inputs (nor a folder
/// holding one), an existing non-empty folder is replaced only when asked (<c>--overwrite</c>) and only if it is a
/// model folder itself, and the new folder appears complete or not at all (<see cref="AtomicFolder"/>), so no file
/// of a previous model (a stale shard) survives next to the new one.
/// </summary>
public static class ModelFolder
{
    /// <summary>Whether <paramref name="dir"/> looks like an HF model folder: config.json plus safetensors weights.</summary>
    public static bool IsModelFolder(string dir) =>
        File.Exists(Path.Combine(dir, "config.json"))
        && (File.Exists(Path.Combine(dir, "model.safetensors.index.json")) || Directory.EnumerateFiles(dir, "*.safetensors").Any());

    /// <summary>Writes <paramref name="outputDir"/> with what <paramref name="fill"/> puts into the folder it is given.</summary>
    /// <param name="inputs">files or folders the command reads (null entries are ignored)</param>
    public static void Write(string outputDir, Action<string> fill, bool overwrite, params string?[] inputs)
    {
        CheckOutput(outputDir, overwrite, inputs);
        AtomicFolder.Write(outputDir, fill, replace: overwrite);
    }

    /// <summary>
    /// The checks of <see cref="Write"/> alone, for commands that work long before they write: the output is no input
    /// and, if it exists non-empty, may be replaced.
    /// </summary>
    public static void CheckOutput(string outputDir, bool overwrite, params string?[] inputs)
    {
        foreach (var input in inputs)
            if (input is not null && (File.Exists(input) || Directory.Exists(input)) && AtomicFolder.IsSameOrInside(input, outputDir))
                throw new DeepSeekSharpException($"{outputDir}: is (or holds) the input {input}; write the new model to another folder");
        if (Directory.Exists(outputDir) && Directory.EnumerateFileSystemEntries(outputDir).Any())
        {
            if (!overwrite) throw new DeepSeekSharpException($"{outputDir}: folder exists and is not empty; pass --overwrite to replace the model folder there");
            if (!IsModelFolder(outputDir)) throw new DeepSeekSharpException($"{outputDir}: not a model folder (no config.json with safetensors); refusing to replace it");
        }
    }
}
