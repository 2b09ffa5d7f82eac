using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.SafeTensors;

/// <summary>One tensor of a safetensors file: its place in the data region (offset relative to the data start).</summary>
public sealed record TensorEntry(string Name, DType DType, int[] Shape, long Offset, long ByteLength)
{
    public long ElementCount => ShapeUtil.Numel(Shape);
}

/// <summary>A bad safetensors file; the message names the file and the problem on one line.</summary>
public sealed class SafeTensorsFormatException(string message) : DeepSeekSharpException(message);
