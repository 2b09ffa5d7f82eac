using System.Runtime.InteropServices;

namespace DeepSeekSharp.Distributed;

/// <summary>
/// Open MPI's C API (<c>libmpi.so.40</c>), bound by function pointer when a launcher started this process and never
/// touched otherwise. Open MPI's predefined handles (<c>MPI_COMM_WORLD</c>, datatypes, ops) are the addresses of
/// exported globals (<c>ompi_mpi_comm_world</c>, ...), not integer constants as in MPICH, so this binding is specific
/// to Open MPI's ABI; another library fails at load with a message saying so.
/// </summary>
internal sealed unsafe class MpiLibrary
{
    public const int Success = 0;
    public const int ThreadSerialized = 2;
    public const int MaxErrorString = 256;
    /// <summary>MPI_IN_PLACE in Open MPI's mpi.h.</summary>
    public static readonly IntPtr InPlace = 1;

    /// <summary>Where the library was found (DSS_MPI_LIBRARY, or the loader's search path).</summary>
    public string Path { get; }

    public IntPtr CommWorld { get; }
    public IntPtr ErrorsReturn { get; }
    public IntPtr Float { get; }
    public IntPtr Double { get; }
    public IntPtr Int32 { get; }
    public IntPtr Int64 { get; }
    public IntPtr UInt8 { get; }
    public IntPtr UInt16 { get; }
    public IntPtr OpSum { get; }
    public IntPtr OpMax { get; }
    public IntPtr OpMin { get; }

    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<IntPtr, int, int> Abort;
    public readonly delegate* unmanaged<int, byte*, int*, int> ErrorString;
    public readonly delegate* unmanaged<byte*, int*, int> GetLibraryVersion;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommRank;
    public readonly delegate* unmanaged<IntPtr, int*, int> CommSize;
    public readonly delegate* unmanaged<IntPtr, int, int, IntPtr*, int> CommSplit;
    public readonly delegate* unmanaged<IntPtr*, int> CommFree;
    public readonly delegate* unmanaged<IntPtr, IntPtr, int> CommSetErrhandler;
    public readonly delegate* unmanaged<IntPtr, int> Barrier;
    public readonly delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int> Bcast;
    public readonly delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int> Allreduce;
    public readonly delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int> ReduceScatterBlock;
    public readonly delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int> Allgather;
    public readonly delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int> Alltoall;
    public readonly delegate* unmanaged<void*, int*, int*, IntPtr, void*, int*, int*, IntPtr, IntPtr, int> Alltoallv;
    public readonly delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, IntPtr*, int> Iallreduce;
    public readonly delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, IntPtr*, int> Iallgather;
    public readonly delegate* unmanaged<void*, int*, int*, IntPtr, void*, int*, int*, IntPtr, IntPtr, IntPtr*, int> Ialltoallv;
    public readonly delegate* unmanaged<IntPtr*, void*, int> Wait;
    public readonly delegate* unmanaged<IntPtr*, int*, void*, int> Test;

    private MpiLibrary(string path, IntPtr handle)
    {
        Path = path;
        IntPtr Symbol(string name) => NativeLibrary.TryGetExport(handle, name, out var address)
            ? address
            : throw new MpiException($"{path}: symbol {name} not found; DeepSeekSharp's MPI binding needs Open MPI (libmpi.so.40, Debian's openmpi-bin)");
        CommWorld = Symbol("ompi_mpi_comm_world");
        ErrorsReturn = Symbol("ompi_mpi_errors_return");
        Float = Symbol("ompi_mpi_float");
        Double = Symbol("ompi_mpi_double");
        Int32 = Symbol("ompi_mpi_int32_t");
        Int64 = Symbol("ompi_mpi_int64_t");
        UInt8 = Symbol("ompi_mpi_uint8_t");
        UInt16 = Symbol("ompi_mpi_uint16_t");
        OpSum = Symbol("ompi_mpi_op_sum");
        OpMax = Symbol("ompi_mpi_op_max");
        OpMin = Symbol("ompi_mpi_op_min");
        Initialized = (delegate* unmanaged<int*, int>)Symbol("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Symbol("MPI_Finalized");
        InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Symbol("MPI_Init_thread");
        Finalize = (delegate* unmanaged<int>)Symbol("MPI_Finalize");
        Abort = (delegate* unmanaged<IntPtr, int, int>)Symbol("MPI_Abort");
        ErrorString = (delegate* unmanaged<int, byte*, int*, int>)Symbol("MPI_Error_string");
        GetLibraryVersion = (delegate* unmanaged<byte*, int*, int>)Symbol("MPI_Get_library_version");
        CommRank = (delegate* unmanaged<IntPtr, int*, int>)Symbol("MPI_Comm_rank");
        CommSize = (delegate* unmanaged<IntPtr, int*, int>)Symbol("MPI_Comm_size");
        CommSplit = (delegate* unmanaged<IntPtr, int, int, IntPtr*, int>)Symbol("MPI_Comm_split");
        CommFree = (delegate* unmanaged<IntPtr*, int>)Symbol("MPI_Comm_free");
        CommSetErrhandler = (delegate* unmanaged<IntPtr, IntPtr, int>)Symbol("MPI_Comm_set_errhandler");
        Barrier = (delegate* unmanaged<IntPtr, int>)Symbol("MPI_Barrier");
        Bcast = (delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int>)Symbol("MPI_Bcast");
        Allreduce = (delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int>)Symbol("MPI_Allreduce");
        ReduceScatterBlock = (delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int>)Symbol("MPI_Reduce_scatter_block");
        Allgather = (delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int>)Symbol("MPI_Allgather");
        Alltoall = (delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, int>)Symbol("MPI_Alltoall");
        Alltoallv = (delegate* unmanaged<void*, int*, int*, IntPtr, void*, int*, int*, IntPtr, IntPtr, int>)Symbol("MPI_Alltoallv");
        Iallreduce = (delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, IntPtr*, int>)Symbol("MPI_Iallreduce");
        Iallgather = (delegate* unmanaged<void*, int, IntPtr, void*, int, IntPtr, IntPtr, IntPtr*, int>)Symbol("MPI_Iallgather");
        Ialltoallv = (delegate* unmanaged<void*, int*, int*, IntPtr, void*, int*, int*, IntPtr, IntPtr, IntPtr*, int>)Symbol("MPI_Ialltoallv");
        Wait = (delegate* unmanaged<IntPtr*, void*, int>)Symbol("MPI_Wait");
        Test = (delegate* unmanaged<IntPtr*, int*, void*, int>)Symbol("MPI_Test");
    }

    /// <summary>
    /// Loads libmpi with RTLD_GLOBAL: Open MPI opens its components (mca_*.so) with dlopen and they resolve Open MPI's
    /// own symbols from the global namespace, which .NET's default RTLD_LOCAL load would hide.
    /// </summary>
    /// <param name="overridePath">DSS_MPI_LIBRARY, or null for the loader's search (libmpi.so.40, then libmpi.so)</param>
    public static MpiLibrary Load(string? overridePath)
    {
        string[] candidates = string.IsNullOrEmpty(overridePath) ? ["libmpi.so.40", "libmpi.so"] : [overridePath];
        var (openAddress, errorAddress) = DynamicLinker();
        var dlopen = (delegate* unmanaged<byte*, int, IntPtr>)openAddress;
        var dlerror = (delegate* unmanaged<IntPtr>)errorAddress;
        var reasons = new List<string>();
        foreach (string name in candidates)
        {
            IntPtr file = Marshal.StringToCoTaskMemUTF8(name);
            IntPtr handle = dlopen((byte*)file, RtldNow | RtldGlobal);
            Marshal.FreeCoTaskMem(file);
            if (handle != IntPtr.Zero) return new MpiLibrary(name, handle);
            reasons.Add(Marshal.PtrToStringUTF8(dlerror()) ?? name);
        }
        throw new MpiException($"an MPI launcher started this process but Open MPI's library could not be loaded ({string.Join("; ", reasons)}): " +
            "install openmpi-bin (Debian: apt-get install -y openmpi-bin) or point DSS_MPI_LIBRARY at libmpi.so.40");
    }

    /// <summary>Throws <see cref="MpiException"/> naming the call, the rank and MPI's own error string.</summary>
    public void Check(int code, string call, int rank)
    {
        if (code != Success) throw new MpiException($"{call} failed on rank {rank}: {Describe(code)}");
    }

    public string Describe(int code)
    {
        byte* text = stackalloc byte[MaxErrorString + 1];
        int length = 0;
        if (ErrorString(code, text, &length) != Success || length <= 0) return $"MPI error {code}";
        return $"{Marshal.PtrToStringUTF8((IntPtr)text, Math.Min(length, MaxErrorString))} (MPI error {code})";
    }

    public string Version()
    {
        // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI 4.
        byte* text = stackalloc byte[257];
        int length = 0;
        if (GetLibraryVersion(text, &length) != Success) return "Open MPI";
        string version = Marshal.PtrToStringUTF8((IntPtr)text, Math.Clamp(length, 0, 256));
        int comma = version.IndexOf(',', StringComparison.Ordinal);
        return (comma > 0 ? version[..comma] : version).Trim();
    }

    private const int RtldNow = 0x2, RtldGlobal = 0x100;

    /// <summary>dlopen/dlerror from glibc (libc.so.6 since glibc 2.34, libdl.so.2 before).</summary>
    private static (IntPtr Open, IntPtr Error) DynamicLinker()
    {
        foreach (string name in (ReadOnlySpan<string>)["libc.so.6", "libdl.so.2"])
            if (NativeLibrary.TryLoad(name, out var lib) && NativeLibrary.TryGetExport(lib, "dlopen", out var open) && NativeLibrary.TryGetExport(lib, "dlerror", out var error))
                return (open, error);
        throw new MpiException("dlopen not found in libc.so.6 or libdl.so.2: MPI needs a glibc-based Linux");
    }
}

/// <summary>An MPI call failed, or MPI could not be started; the message names the call, the rank and MPI's reason.</summary>
public sealed class MpiException(string message) : DeepSeekSharpException(message);
