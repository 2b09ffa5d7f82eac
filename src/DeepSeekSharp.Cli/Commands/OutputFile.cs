using DeepSeekSharp.IO.SafeTensors;

namespace DeepSeekSharp.Cli.Commands;

internal static class OutputFile
{
    /// <summary>Writes F32 tensors as one safetensors file, atomically.</summary>
    public static void WriteF32(string path, IReadOnlyList<(string Name, int[] Shape, float[] Data)> tensors)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null && !Directory.Exists(folder)) throw new DeepSeekSharpException($"{path}: output folder does not exist");
        SafeTensorsWriter.WriteFloat32(path, tensors);
    }
}
