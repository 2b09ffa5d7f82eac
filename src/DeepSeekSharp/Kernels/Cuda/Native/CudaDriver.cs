using System.Runtime.InteropServices;

using DeepSeekSharp.Kernels.Cuda;

namespace DeepSeekSharp.Kernels.Cuda.Native;

/// <summary>The CUDA driver API entry points the backend uses (libcuda; CUresult 0 = success).</summary>
internal static unsafe partial class CudaDriver
{
    public const int DeviceAttributeMultiprocessorCount = 16;
    public const int DeviceAttributeComputeCapabilityMajor = 75;
    public const int DeviceAttributeComputeCapabilityMinor = 76;
    public const int DeviceAttributeMaxSharedMemoryPerBlockOptin = 97;
    public const int FunctionAttributeMaxDynamicSharedSizeBytes = 8;

    [LibraryImport(NativeLibraries.Driver)] public static partial int cuInit(uint flags);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuDriverGetVersion(out int version);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuDeviceGetCount(out int count);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceTotalMem_v2")] public static partial int cuDeviceTotalMem(out nuint bytes, int device);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial int cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuCtxSetCurrent(IntPtr context);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuCtxSynchronize();
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemAlloc_v2")] public static partial int cuMemAlloc(out ulong pointer, nuint bytes);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemFree_v2")] public static partial int cuMemFree(ulong pointer);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemGetInfo_v2")] public static partial int cuMemGetInfo(out nuint free, out nuint total);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyHtoD_v2")] public static partial int cuMemcpyHtoD(ulong destination, void* source, nuint bytes);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoH_v2")] public static partial int cuMemcpyDtoH(void* destination, ulong source, nuint bytes);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoD_v2")] public static partial int cuMemcpyDtoD(ulong destination, ulong source, nuint bytes);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemsetD8_v2")] public static partial int cuMemsetD8(ulong destination, byte value, nuint count);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuModuleLoadData(out IntPtr module, void* image);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuModuleUnload(IntPtr module);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuModuleGetFunction(out IntPtr function, IntPtr module, byte* name);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuFuncSetAttribute(IntPtr function, int attribute, int value);
    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuLaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, IntPtr stream, void** parameters, void** extra);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventCreate")] public static partial int cuEventCreate(out IntPtr evt, uint flags);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventRecord")] public static partial int cuEventRecord(IntPtr evt, IntPtr stream);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuEventSynchronize(IntPtr evt);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuEventElapsedTime(out float milliseconds, IntPtr start, IntPtr end);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventDestroy_v2")] public static partial int cuEventDestroy(IntPtr evt);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuGetErrorName(int error, out IntPtr name);
    [LibraryImport(NativeLibraries.Driver)] public static partial int cuGetErrorString(int error, out IntPtr text);

    /// <summary>Throws <see cref="CudaException"/> naming the call and the driver's error name for a non-zero result.</summary>
    public static void Check(int result, string call)
    {
        if (result == 0) return;
        string name = "CUDA_ERROR_" + result, text = "";
        try
        {
            if (cuGetErrorName(result, out var n) == 0 && n != IntPtr.Zero) name = Marshal.PtrToStringAnsi(n) ?? name;
            if (cuGetErrorString(result, out var t) == 0 && t != IntPtr.Zero) text = Marshal.PtrToStringAnsi(t) ?? "";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        throw new CudaException($"{call} failed: {name} ({result}){(text.Length > 0 ? ": " + text : "")}");
    }
}
