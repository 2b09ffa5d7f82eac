using System.Runtime.InteropServices;

using DeepSeekSharp.Kernels.Cuda;

namespace DeepSeekSharp.Kernels.Cuda.Native;

/// <summary>
/// cuBLASLt (cublasStatus_t 0 = success). Matrices are column-major here; the backend's row-major products are
/// expressed through the transpose identity (see <see cref="CublasLtGemm"/>). Enum values from cublasLt.h / library_types.h.
/// </summary>
internal static unsafe partial class CublasLt
{
    // cudaDataType_t
    public const int R32F = 0, R16BF = 14, R8FE4M3 = 28;
    // cublasComputeType_t
    public const int Compute32F = 68, Compute32FFastTf32 = 77;
    // cublasOperation_t
    public const int OpN = 0, OpT = 1;
    // cublasLtMatmulDescAttributes_t
    public const int DescTransA = 3, DescTransB = 4, DescAScalePointer = 17, DescBScalePointer = 18, DescAScaleMode = 31, DescBScaleMode = 32;
    // cublasLtMatmulPreferenceAttributes_t
    public const int PrefMaxWorkspaceBytes = 1;
    // cublasLtMatmulMatrixScale_t: DeepSeek-V3's fine-grained FP8 scaling (cuBLAS 12.9+, Hopper)
    public const int ScaleVec128Fp32 = 4, ScaleBlock128x128Fp32 = 5;

    /// <summary>cublasLtMatmulHeuristicResult_t: the algorithm (64 opaque bytes) and what it needs.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct HeuristicResult
    {
        public fixed ulong Algo[8];
        public nuint WorkspaceSize;
        public int State;
        public float WavesCount;
        public fixed int Reserved[4];
    }

    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtCreate(out IntPtr handle);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtDestroy(IntPtr handle);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial nuint cublasLtGetVersion();
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatmulDescCreate(out IntPtr desc, int computeType, int scaleType);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatmulDescSetAttribute(IntPtr desc, int attribute, void* value, nuint size);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatmulDescDestroy(IntPtr desc);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatrixLayoutCreate(out IntPtr layout, int type, ulong rows, ulong cols, long ld);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatrixLayoutDestroy(IntPtr layout);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatmulPreferenceCreate(out IntPtr preference);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatmulPreferenceSetAttribute(IntPtr preference, int attribute, void* value, nuint size);
    [LibraryImport(NativeLibraries.CublasLt)] public static partial int cublasLtMatmulPreferenceDestroy(IntPtr preference);
    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial int cublasLtMatmulAlgoGetHeuristic(IntPtr handle, IntPtr opDesc, IntPtr aDesc, IntPtr bDesc, IntPtr cDesc, IntPtr dDesc,
        IntPtr preference, int requested, HeuristicResult* results, out int returned);
    [LibraryImport(NativeLibraries.CublasLt)]
    public static partial int cublasLtMatmul(IntPtr handle, IntPtr opDesc, void* alpha, ulong a, IntPtr aDesc, ulong b, IntPtr bDesc, void* beta,
        ulong c, IntPtr cDesc, ulong d, IntPtr dDesc, void* algo, ulong workspace, nuint workspaceSize, IntPtr stream);

    public static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException($"{call} failed: cublasStatus {status}{(status == 15 ? " (CUBLAS_STATUS_NOT_SUPPORTED)" : status == 7 ? " (CUBLAS_STATUS_INVALID_VALUE)" : "")}");
    }
}
