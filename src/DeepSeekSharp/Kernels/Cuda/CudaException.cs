namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>A CUDA, NVRTC or cuBLASLt call failed, or no usable GPU was found; the message names the call and the cause.</summary>
public sealed class CudaException(string message) : DeepSeekSharpException(message);
