using System.Runtime.InteropServices;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>An address in GPU memory (opaque to the host).</summary>
public readonly record struct DevicePtr(ulong Address)
{
    public bool IsNull => Address == 0;

    public DevicePtr Offset(long bytes) => new(Address + (ulong)bytes);
}

/// <summary>A launch's grid or block extent.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public long Count => (long)X * Y * Z;
}

/// <summary>The arithmetic a GEMM runs in: fp32 exactly, fp32 inputs on TF32 tensor cores, or BF16 inputs (fp32 accumulation and output).</summary>
public enum GemmPrecision { Fp32, Tf32, Bf16 }

/// <summary>
/// One row-major product C[m, n] = alpha · op(A) · op(B) + beta · C on device memory (the same contract as
/// <see cref="IBackend.Gemm"/>; op = optional transpose, leading dimensions in elements).
/// </summary>
public readonly record struct GemmCall(GemmPrecision Precision, bool TransA, bool TransB, int M, int N, int K, float Alpha,
    DevicePtr A, int Lda, DevicePtr B, int Ldb, float Beta, DevicePtr C, int Ldc);

/// <summary>
/// What <see cref="CudaBackend"/> needs from a GPU: memory, copies, launches of the kernels in Sources/kernels.cu, and
/// GEMMs. <see cref="CudaRuntime"/> drives a real device through the driver API, NVRTC and cuBLASLt; tests run the
/// same kernel sources on an emulated device, so the backend's host logic and the kernels' arithmetic are checked on
/// machines without a GPU.
/// </summary>
public interface IGpuRuntime : IDisposable
{
    /// <summary>The device, in words (name, compute capability, memory).</summary>
    string Description { get; }

    DevicePtr Allocate(long bytes);

    void Free(DevicePtr pointer);

    unsafe void Upload(DevicePtr destination, void* source, long bytes);

    unsafe void Download(void* destination, DevicePtr source, long bytes);

    /// <summary>Sets <paramref name="bytes"/> bytes to zero.</summary>
    void Clear(DevicePtr destination, long bytes);

    /// <summary>Runs kernel <paramref name="kernel"/> of kernels.cu; <paramref name="arguments"/> points at each argument's value.</summary>
    unsafe void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, void** arguments);

    void Gemm(in GemmCall call);

    /// <summary>Waits for every launched operation; reports an asynchronous failure.</summary>
    void Synchronize();
}

/// <summary>
/// The argument block of one launch: each value is copied into native memory and <see cref="Pointers"/> lists their
/// addresses, as cuLaunchKernel takes them. Reused from launch to launch (no allocation per call).
/// </summary>
public sealed unsafe class KernelArguments : IDisposable
{
    private const int ValueBytes = 1024, MaxArguments = 64;
    private byte* _values = (byte*)NativeMemory.AlignedAlloc(ValueBytes, 16);
    private void** _pointers = (void**)NativeMemory.Alloc(MaxArguments, (nuint)sizeof(void*));
    private int _count, _offset;

    public void** Pointers => _pointers;

    public int Count => _count;

    public KernelArguments Reset()
    {
        _count = 0;
        _offset = 0;
        return this;
    }

    public KernelArguments Add<T>(T value) where T : unmanaged
    {
        int size = sizeof(T), align = size >= 8 ? 8 : size >= 4 ? 4 : size;
        _offset = (_offset + align - 1) & -align;
        if (_offset + size > ValueBytes || _count == MaxArguments) throw new InvalidOperationException("too many kernel arguments");
        *(T*)(_values + _offset) = value;
        _pointers[_count++] = _values + _offset;
        _offset += size;
        return this;
    }

    public KernelArguments Add(DevicePtr pointer) => Add(pointer.Address);

    public void Dispose()
    {
        if (_values == null) return;
        NativeMemory.AlignedFree(_values);
        NativeMemory.Free(_pointers);
        _values = null;
        _pointers = null;
    }
}

/// <summary>The geometry of the MLA attention kernels (kernels.cu's DssMla, passed by value).</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct MlaKernelShape(int Batch, int Seq, int Heads, int Dn, int Dr, int Dv, float Scale)
{
    public static MlaKernelShape From(in MlaAttentionShape s) => new(s.Batch, s.SeqLen, s.Heads, s.NopeDim, s.RopeDim, s.VDim, s.Scale);
}
