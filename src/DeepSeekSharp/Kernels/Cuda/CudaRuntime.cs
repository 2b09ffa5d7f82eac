using System.Runtime.InteropServices;
using System.Text;
using DeepSeekSharp.Kernels.Cuda.Native;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>
/// A real NVIDIA GPU through the CUDA driver API: the device's primary context, plain device allocations
/// (cuMemAlloc), the kernels of kernels.cu compiled once by NVRTC for this device's architecture and cached on disk
/// (<see cref="KernelSource.CacheFolder"/>), and GEMMs through cuBLASLt (<see cref="CublasLtGemm"/>). All work goes to
/// the default stream, in order.
/// </summary>
public sealed unsafe class CudaRuntime : IGpuRuntime
{
    private readonly int _device;
    private readonly IntPtr _context;
    private readonly IntPtr _module;
    private readonly Dictionary<string, IntPtr> _functions = [];
    private readonly Dictionary<string, int> _sharedLimit = [];
    private readonly Lock _gate = new();
    private CublasLtGemm? _gemm;
    private bool _disposed;

    private CudaRuntime(int device, IntPtr context, IntPtr module, string description, int major, int minor, int multiprocessors, int maxShared)
    {
        (_device, _context, _module, Description) = (device, context, module, description);
        (ComputeMajor, ComputeMinor, Multiprocessors, MaxSharedBytesPerBlock) = (major, minor, multiprocessors, maxShared);
    }

    public string Description { get; }

    public int ComputeMajor { get; }

    public int ComputeMinor { get; }

    public int Multiprocessors { get; }

    public int MaxSharedBytesPerBlock { get; }

    /// <summary>How the kernels were obtained: "compiled" (NVRTC ran) or "cached".</summary>
    public string ModuleOrigin { get; private set; } = "";

    internal CublasLtGemm Blas => _gemm ??= new CublasLtGemm(this);

    /// <summary>Opens GPU <paramref name="ordinal"/>; a clear <see cref="CudaException"/> when there is no driver or device.</summary>
    public static CudaRuntime Open(int ordinal = 0)
    {
        NativeLibraries.Register();
        try
        {
            CudaDriver.Check(CudaDriver.cuInit(0), "cuInit");
        }
        catch (DllNotFoundException)
        {
            throw new CudaException("no CUDA driver (libcuda.so.1) on this machine: --device cuda needs an NVIDIA GPU and its driver");
        }
        CudaDriver.Check(CudaDriver.cuDeviceGetCount(out int count), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= count) throw new CudaException($"GPU {ordinal} requested but the driver sees {count}");
        CudaDriver.Check(CudaDriver.cuDeviceGet(out int device, ordinal), "cuDeviceGet");
        byte* name = stackalloc byte[256];
        CudaDriver.Check(CudaDriver.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int major, CudaDriver.DeviceAttributeComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int minor, CudaDriver.DeviceAttributeComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int sms, CudaDriver.DeviceAttributeMultiprocessorCount, device), "cuDeviceGetAttribute");
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int maxShared, CudaDriver.DeviceAttributeMaxSharedMemoryPerBlockOptin, device), "cuDeviceGetAttribute");
        CudaDriver.Check(CudaDriver.cuDeviceTotalMem(out nuint total, device), "cuDeviceTotalMem");
        CudaDriver.Check(CudaDriver.cuDriverGetVersion(out int driver), "cuDriverGetVersion");
        CudaDriver.Check(CudaDriver.cuDevicePrimaryCtxRetain(out IntPtr context, device), "cuDevicePrimaryCtxRetain");
        CudaDriver.Check(CudaDriver.cuCtxSetCurrent(context), "cuCtxSetCurrent");
        string description = string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{Marshal.PtrToStringUTF8((IntPtr)name)} (compute {major}.{minor}, {sms} SMs, {(double)total / (1 << 30):F1} GiB, driver API {driver / 1000}.{driver % 1000 / 10})");
        var (image, origin) = CompiledKernels(major, minor);
        IntPtr module;
        fixed (byte* pImage = image) CudaDriver.Check(CudaDriver.cuModuleLoadData(out module, pImage), "cuModuleLoadData");
        return new CudaRuntime(device, context, module, description, major, minor, sms, maxShared) { ModuleOrigin = origin };
    }

    /// <summary>The CUBIN of kernels.cu for this architecture: from the cache, or compiled by NVRTC and cached (atomically).</summary>
    private static (byte[] Image, string Origin) CompiledKernels(int major, int minor)
    {
        string[] options = KernelSource.CompileOptions(major, minor);
        int nvrtcMajor, nvrtcMinor;
        try
        {
            Nvrtc.Check(Nvrtc.nvrtcVersion(out nvrtcMajor, out nvrtcMinor), "nvrtcVersion");
        }
        catch (DllNotFoundException)
        {
            throw new CudaException("NVRTC (libnvrtc.so) not found: install the CUDA toolkit or point DSS_CUDA_LIBRARY_PATH at its lib64 folder");
        }
        string source = KernelSource.Text;
        string key = KernelSource.CacheKey(source, options, $"nvrtc {nvrtcMajor}.{nvrtcMinor}");
        string folder = KernelSource.CacheFolder(Environment.GetEnvironmentVariable);
        string path = Path.Combine(folder, key + ".cubin");
        if (File.Exists(path)) return (File.ReadAllBytes(path), "cached");
        byte[] image = Compile(source, options);
        try
        {
            Directory.CreateDirectory(folder);
            string temp = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllBytes(temp, image);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only home only costs a recompilation next time.
        }
        return (image, "compiled");
    }

    private static byte[] Compile(string source, string[] options)
    {
        byte[] src = Encoding.UTF8.GetBytes(source + "\0"), name = "kernels.cu\0"u8.ToArray();
        var optionBytes = options.Select(o => Encoding.UTF8.GetBytes(o + "\0")).ToArray();
        var handles = optionBytes.Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
        IntPtr program;
        try
        {
            fixed (byte* pSrc = src) fixed (byte* pName = name)
                Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out program, pSrc, pName, 0, null, null), "nvrtcCreateProgram");
            byte** pOptions = stackalloc byte*[optionBytes.Length];
            for (int i = 0; i < optionBytes.Length; i++) pOptions[i] = (byte*)handles[i].AddrOfPinnedObject();
            int result = Nvrtc.nvrtcCompileProgram(program, optionBytes.Length, pOptions);
            Nvrtc.Check(Nvrtc.nvrtcGetProgramLogSize(program, out nuint logSize), "nvrtcGetProgramLogSize");
            string log = "";
            if (logSize > 1)
            {
                var buffer = new byte[(int)logSize];
                fixed (byte* pLog = buffer) Nvrtc.Check(Nvrtc.nvrtcGetProgramLog(program, pLog), "nvrtcGetProgramLog");
                log = Encoding.UTF8.GetString(buffer).TrimEnd('\0').Trim();
            }
            if (result != 0)
            {
                Nvrtc.nvrtcDestroyProgram(ref program);
                throw new CudaException($"kernels.cu did not compile ({string.Join(' ', options)}):\n{log}");
            }
            Nvrtc.Check(Nvrtc.nvrtcGetCUBINSize(program, out nuint size), "nvrtcGetCUBINSize");
            var image = new byte[(int)size];
            fixed (byte* pImage = image) Nvrtc.Check(Nvrtc.nvrtcGetCUBIN(program, pImage), "nvrtcGetCUBIN");
            Nvrtc.nvrtcDestroyProgram(ref program);
            return image;
        }
        finally
        {
            foreach (var h in handles) h.Free();
        }
    }

    /// <summary>The context is per thread in the driver API: every entry point makes it current first.</summary>
    internal void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CudaDriver.Check(CudaDriver.cuCtxSetCurrent(_context), "cuCtxSetCurrent");
    }

    public DevicePtr Allocate(long bytes)
    {
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemAlloc(out ulong p, (nuint)Math.Max(1, bytes)), $"cuMemAlloc({bytes} bytes)");
        return new DevicePtr(p);
    }

    public void Free(DevicePtr pointer)
    {
        if (pointer.IsNull || _disposed) return;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemFree(pointer.Address), "cuMemFree");
    }

    public void Upload(DevicePtr destination, void* source, long bytes)
    {
        if (bytes == 0) return;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemcpyHtoD(destination.Address, source, (nuint)bytes), "cuMemcpyHtoD");
    }

    public void Download(void* destination, DevicePtr source, long bytes)
    {
        if (bytes == 0) return;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemcpyDtoH(destination, source.Address, (nuint)bytes), "cuMemcpyDtoH");
    }

    public void Clear(DevicePtr destination, long bytes)
    {
        if (bytes == 0) return;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemsetD8(destination.Address, 0, (nuint)bytes), "cuMemsetD8");
    }

    public void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, void** arguments)
    {
        if (grid.Count == 0) return;
        MakeCurrent();
        IntPtr function = Function(kernel, sharedBytes);
        CudaDriver.Check(CudaDriver.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedBytes, IntPtr.Zero,
            arguments, null), $"cuLaunchKernel({kernel}, grid {grid.X}x{grid.Y}x{grid.Z}, block {block.X}, {sharedBytes} B shared)");
    }

    private IntPtr Function(string kernel, int sharedBytes)
    {
        lock (_gate)
        {
            if (!_functions.TryGetValue(kernel, out var function))
            {
                byte[] name = Encoding.ASCII.GetBytes(kernel + "\0");
                fixed (byte* pName = name) CudaDriver.Check(CudaDriver.cuModuleGetFunction(out function, _module, pName), $"cuModuleGetFunction({kernel})");
                _functions[kernel] = function;
                _sharedLimit[kernel] = 48 * 1024;
            }
            // More than 48 KB of dynamic shared memory must be opted into per function.
            if (sharedBytes > _sharedLimit[kernel])
            {
                if (sharedBytes > MaxSharedBytesPerBlock)
                    throw new CudaException($"{kernel} needs {sharedBytes} bytes of shared memory; this GPU allows {MaxSharedBytesPerBlock} per block");
                CudaDriver.Check(CudaDriver.cuFuncSetAttribute(function, CudaDriver.FunctionAttributeMaxDynamicSharedSizeBytes, sharedBytes), "cuFuncSetAttribute");
                _sharedLimit[kernel] = sharedBytes;
            }
            return function;
        }
    }

    public void Gemm(in GemmCall call) => Blas.Gemm(call);

    public void Synchronize()
    {
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuCtxSynchronize(), "cuCtxSynchronize");
    }

    /// <summary>Times <paramref name="work"/> with device events (milliseconds, after the device finished it).</summary>
    public float TimeMilliseconds(Action work)
    {
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuEventCreate(out IntPtr start, 0), "cuEventCreate");
        CudaDriver.Check(CudaDriver.cuEventCreate(out IntPtr end, 0), "cuEventCreate");
        try
        {
            CudaDriver.Check(CudaDriver.cuEventRecord(start, IntPtr.Zero), "cuEventRecord");
            work();
            MakeCurrent();
            CudaDriver.Check(CudaDriver.cuEventRecord(end, IntPtr.Zero), "cuEventRecord");
            CudaDriver.Check(CudaDriver.cuEventSynchronize(end), "cuEventSynchronize");
            CudaDriver.Check(CudaDriver.cuEventElapsedTime(out float ms, start, end), "cuEventElapsedTime");
            return ms;
        }
        finally
        {
            CudaDriver.cuEventDestroy(start);
            CudaDriver.cuEventDestroy(end);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _gemm?.Dispose();
        CudaDriver.cuCtxSetCurrent(_context);
        CudaDriver.cuModuleUnload(_module);
        CudaDriver.cuDevicePrimaryCtxRelease(_device);
        _disposed = true;
    }
}
