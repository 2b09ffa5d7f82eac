using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.IO.SafeTensors;

/// <summary>The dtype names of the safetensors header.</summary>
public static class SafeTensorsDTypes
{
    private static readonly Dictionary<string, DType> ByName = new(StringComparer.Ordinal)
    {
        ["F32"] = DType.F32, ["F16"] = DType.F16, ["BF16"] = DType.BF16, ["F8_E4M3"] = DType.F8E4M3,
        ["F8_E5M2"] = DType.F8E5M2, ["F64"] = DType.F64, ["I64"] = DType.I64, ["I32"] = DType.I32,
        ["I16"] = DType.I16, ["I8"] = DType.I8, ["U8"] = DType.U8, ["BOOL"] = DType.Bool,
    };

    public static bool TryParse(string name, out DType dtype) => ByName.TryGetValue(name, out dtype);

    public static string Name(DType dtype) => ByName.First(kv => kv.Value == dtype).Key;
}
