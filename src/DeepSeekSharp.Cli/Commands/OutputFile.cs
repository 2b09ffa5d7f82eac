using DeepSeekSharp.IO.SafeTensors;

namespace DeepSeekSharp.Cli.Commands;

internal static class OutputFile
{
    /// <summary>Writes F32 tensors as one safetensors file, atomically; never over a file of the input model folder.</summary>
    public static void WriteF32(string path, IReadOnlyList<(string Name, int[] Shape, float[] Data)> tensors, string modelDir)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null && !Directory.Exists(folder)) throw new DeepSeekSharpException($"{path}: output folder does not exist");
        if (File.Exists(path) && IO.AtomicFolder.IsSameOrInside(path, modelDir))
            throw new DeepSeekSharpException($"{path}: is a file of the input model folder {modelDir}; write the output elsewhere");
        SafeTensorsWriter.WriteFloat32(path, tensors);
    }
}
