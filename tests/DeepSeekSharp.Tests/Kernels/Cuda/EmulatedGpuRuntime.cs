using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using DeepSeekSharp.Kernels.Cuda;
using DeepSeekSharp.Kernels.Reference;

namespace DeepSeekSharp.Tests.Kernels.Cuda;

/// <summary>
/// <see cref="IGpuRuntime"/> on the CPU: kernels.cu compiled by the machine's C++ compiler against emulator.h (blocks
/// one after another, one real thread per CUDA thread), device memory in native heap blocks (poisoned with NaN when
/// allocated), and GEMMs by the reference triple loop. It runs <see cref="CudaBackend"/>'s host logic and the kernels'
/// arithmetic on machines without a GPU; the real device runs the same source through NVRTC.
/// </summary>
internal sealed unsafe class EmulatedGpuRuntime : IGpuRuntime
{
    private static readonly Lazy<IntPtr> Library = new(Build);
    private readonly Dictionary<ulong, long> _allocations = [];
    private readonly Dictionary<string, IntPtr> _kernels = [];
    private readonly delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, void**, int> _launch;

    public EmulatedGpuRuntime()
    {
        _launch = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, void**, int>)NativeLibrary.GetExport(Library.Value, "dss_emu_launch");
    }

    public string Description => "emulated GPU (kernels.cu on CPU threads)";

    /// <summary>Launches so far, per kernel (tests check that an operation really ran on the device).</summary>
    public Dictionary<string, int> Launches { get; } = [];

    private static IntPtr Build()
    {
        string source = KernelSource.Text;
        string header = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Kernels", "Cuda", "emulator.h"));
        var unit = new StringBuilder();
        unit.AppendLine("#include \"emulator.h\"").AppendLine(source);
        foreach (string name in KernelSource.KernelNames(source)) unit.AppendLine($"DSS_EMU_EXPORT({name})");
        string key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(header + unit)))[..16];
        string dir = Path.Combine(Path.GetTempPath(), "dss-cuda-emulator");
        Directory.CreateDirectory(dir);
        string library = Path.Combine(dir, $"libdss_emu_{key}.so");
        if (!File.Exists(library))
        {
            string work = Path.Combine(dir, key + "-" + Environment.ProcessId);
            Directory.CreateDirectory(work);
            File.WriteAllText(Path.Combine(work, "emulator.h"), header);
            File.WriteAllText(Path.Combine(work, "kernels_emulated.cpp"), unit.ToString());
            var psi = new ProcessStartInfo("g++", ["-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
                "-Wno-unused-function", "-o", library + ".tmp", "kernels_emulated.cpp"])
            { WorkingDirectory = work, RedirectStandardError = true, RedirectStandardOutput = true };
            using var process = Process.Start(psi) ?? throw new InvalidOperationException("g++ did not start");
            string errors = process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0) throw new InvalidOperationException($"the emulated kernels did not compile:\n{errors}");
            File.Move(library + ".tmp", library, overwrite: true);
            Directory.Delete(work, recursive: true);
        }
        return NativeLibrary.Load(library);
    }

    public DevicePtr Allocate(long bytes)
    {
        var p = NativeMemory.Alloc((nuint)Math.Max(1, bytes));
        new Span<byte>(p, (int)Math.Min(bytes, int.MaxValue)).Fill(0xFF);
        lock (_allocations) _allocations[(ulong)p] = bytes;
        return new DevicePtr((ulong)p);
    }

    public void Free(DevicePtr pointer)
    {
        if (pointer.IsNull) return;
        lock (_allocations)
            if (!_allocations.Remove(pointer.Address)) throw new InvalidOperationException("free of memory this device did not allocate");
        NativeMemory.Free((void*)pointer.Address);
    }

    /// <summary>Bytes still allocated (a test checks the backend hands everything back).</summary>
    public long LiveBytes { get { lock (_allocations) return _allocations.Values.Sum(); } }

    public void Upload(DevicePtr destination, void* source, long bytes) => Buffer.MemoryCopy(source, (void*)destination.Address, bytes, bytes);

    public void Download(void* destination, DevicePtr source, long bytes) => Buffer.MemoryCopy((void*)source.Address, destination, bytes, bytes);

    public void Clear(DevicePtr destination, long bytes) => new Span<byte>((void*)destination.Address, checked((int)bytes)).Clear();

    public void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, void** arguments)
    {
        if (grid.Count == 0) return;
        if (block.X % 32 != 0) throw new InvalidOperationException($"{kernel}: block of {block.X} threads is not a multiple of 32");
        if (grid.Y > LaunchPlan.MaxGridY || grid.Z > LaunchPlan.MaxGridY) throw new InvalidOperationException($"{kernel}: grid {grid} beyond the hardware limit");
        if (!_kernels.TryGetValue(kernel, out var entry)) _kernels[kernel] = entry = NativeLibrary.GetExport(Library.Value, "dss_emu_" + kernel);
        Launches[kernel] = Launches.GetValueOrDefault(kernel) + 1;
        int rc = _launch(entry, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedBytes, arguments);
        if (rc != 0) throw new InvalidOperationException($"{kernel}: the emulator refused the launch ({sharedBytes} B shared, block {block})");
    }

    public void Gemm(in GemmCall c)
    {
        long aLen = CudaExtent(c.TransA ? c.K : c.M, c.TransA ? c.M : c.K, c.Lda), bLen = CudaExtent(c.TransB ? c.N : c.K, c.TransB ? c.K : c.N, c.Ldb);
        long cLen = CudaExtent(c.M, c.N, c.Ldc);
        var a = new ReadOnlySpan<float>((void*)c.A.Address, (int)aLen);
        var b = new ReadOnlySpan<float>((void*)c.B.Address, (int)bLen);
        var cs = new Span<float>((void*)c.C.Address, (int)cLen);
        Launches["gemm"] = Launches.GetValueOrDefault("gemm") + 1;
        ReferenceGemm.Multiply(c.TransA, c.TransB, c.M, c.N, c.K, c.Alpha, a, c.Lda, b, c.Ldb, c.Beta, cs, c.Ldc);
    }

    private static long CudaExtent(int rows, int cols, int ld) => rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;

    public void Synchronize() { }

    public void Dispose() { }
}
