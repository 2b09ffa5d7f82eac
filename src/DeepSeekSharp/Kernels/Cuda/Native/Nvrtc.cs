using System.Runtime.InteropServices;

using DeepSeekSharp.Kernels.Cuda;

namespace DeepSeekSharp.Kernels.Cuda.Native;

/// <summary>NVRTC, the run-time CUDA C++ compiler (nvrtcResult 0 = success).</summary>
internal static unsafe partial class Nvrtc
{
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(NativeLibraries.Nvrtc)]
    public static partial int nvrtcCreateProgram(out IntPtr program, byte* source, byte* name, int headerCount, byte** headers, byte** includeNames);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcCompileProgram(IntPtr program, int optionCount, byte** options);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcGetProgramLogSize(IntPtr program, out nuint size);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcGetProgramLog(IntPtr program, byte* log);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcGetCUBINSize(IntPtr program, out nuint size);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcGetCUBIN(IntPtr program, byte* cubin);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial int nvrtcDestroyProgram(ref IntPtr program);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial IntPtr nvrtcGetErrorString(int result);

    public static void Check(int result, string call)
    {
        if (result == 0) return;
        string text = Marshal.PtrToStringAnsi(nvrtcGetErrorString(result)) ?? "";
        throw new CudaException($"{call} failed: NVRTC error {result} {text}");
    }
}
