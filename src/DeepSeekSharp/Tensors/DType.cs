namespace DeepSeekSharp.Tensors;

/// <summary>Element types that can be stored (safetensors names in comments). Compute is always fp32.</summary>
public enum DType
{
    F32,     // "F32"
    F16,     // "F16"
    BF16,    // "BF16"
    F8E4M3,  // "F8_E4M3" (OCP E4M3FN)
    F8E5M2,  // "F8_E5M2"
    F64,     // "F64"
    I64,     // "I64"
    I32,     // "I32"
    I16,     // "I16"
    I8,      // "I8"
    U8,      // "U8"
    Bool,    // "BOOL"
}
