using DeepSeekSharp.Kernels.Cuda.Native;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>
/// GEMMs through cuBLASLt. cuBLASLt is column-major; a row-major C[m, n] = op(A)·op(B) is the column-major
/// Cᵀ[n, m] = op(B)ᵀ·op(A)ᵀ, and a row-major matrix read column-major is its transpose, so the call passes B as the
/// first operand and A as the second with the same transpose flags, m and n swapped, and the same leading dimensions.
/// Plans (descriptors and the heuristic's algorithm) are cached per shape.
/// </summary>
internal sealed unsafe class CublasLtGemm : IDisposable
{
    private const long WorkspaceBytes = 64L << 20;
    private readonly CudaRuntime _runtime;
    private readonly IntPtr _handle;
    private readonly DevicePtr _workspace;
    private readonly Dictionary<PlanKey, Plan> _plans = [];
    private readonly KernelArguments _args = new();
    private DevicePtr _bf16;
    private long _bf16Bytes;

    public CublasLtGemm(CudaRuntime runtime)
    {
        _runtime = runtime;
        runtime.MakeCurrent();
        try
        {
            CublasLt.Check(CublasLt.cublasLtCreate(out _handle), "cublasLtCreate");
        }
        catch (DllNotFoundException)
        {
            throw new CudaException("cuBLASLt (libcublasLt.so) not found: install the CUDA toolkit or point DSS_CUDA_LIBRARY_PATH at its lib64 folder");
        }
        _workspace = runtime.Allocate(WorkspaceBytes);
    }

    /// <summary>cuBLASLt's version number (e.g. 130000 for 13.0.0).</summary>
    public static long Version => (long)CublasLt.cublasLtGetVersion();

    private readonly record struct PlanKey(int Kind, bool TransA, bool TransB, int M, int N, int K, int Lda, int Ldb, int Ldc);

    private sealed class Plan
    {
        public IntPtr Op, A, B, C;
        public CublasLt.HeuristicResult Heuristic;
        public string Description = "";
        public bool WeightFirst, Bf16Output;
    }

    public void Gemm(in GemmCall call)
    {
        if (call.M == 0 || call.N == 0) return;
        _runtime.MakeCurrent();
        DevicePtr a = call.A, b = call.B;
        if (call.Precision == GemmPrecision.Bf16)
        {
            // BF16 operands (fp32 accumulation and output): both inputs rounded into one scratch buffer.
            long aCount = Extent(call.TransA ? call.K : call.M, call.TransA ? call.M : call.K, call.Lda);
            long bCount = Extent(call.TransB ? call.N : call.K, call.TransB ? call.K : call.N, call.Ldb);
            long bOffset = (aCount * 2 + 255) & ~255L;
            EnsureBf16(bOffset + bCount * 2);
            ToBf16(a, aCount, _bf16);
            ToBf16(b, bCount, _bf16.Offset(bOffset));
            (a, b) = (_bf16, _bf16.Offset(bOffset));
        }
        var key = new PlanKey((int)call.Precision, call.TransA, call.TransB, call.M, call.N, call.K, call.Lda, call.Ldb, call.Ldc);
        bool fresh = !_plans.ContainsKey(key);
        var plan = PlanFor(call);
        if (fresh && call.Beta == 0) TuneFor(plan, call with { A = a, B = b });
        float alpha = call.Alpha, beta = call.Beta;
        fixed (ulong* algo = plan.Heuristic.Algo)
            CublasLt.Check(CublasLt.cublasLtMatmul(_handle, plan.Op, &alpha, b.Address, plan.A, a.Address, plan.B, &beta,
                call.C.Address, plan.C, call.C.Address, plan.C, algo, _workspace.Address, (nuint)WorkspaceBytes, IntPtr.Zero), "cublasLtMatmul");
    }

    /// <summary>Elements spanned by a row-major rows × cols matrix with leading dimension ld.</summary>
    internal static long Extent(int rows, int cols, int ld) => rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;

    private void EnsureBf16(long bytes)
    {
        if (bytes <= _bf16Bytes) return;
        _runtime.Free(_bf16);
        _bf16Bytes = Math.Max(bytes, _bf16Bytes * 2);
        _bf16 = _runtime.Allocate(_bf16Bytes);
    }

    private void ToBf16(DevicePtr source, long count, DevicePtr destination)
    {
        _args.Reset().Add(source).Add(destination).Add(count);
        _runtime.Launch("f32_to_bf16", new Dim3((uint)Math.Clamp((count + 255) / 256, 1, 65535)), new Dim3(256), 0, _args.Pointers);
    }

    private Plan PlanFor(in GemmCall call)
    {
        var key = new PlanKey((int)call.Precision, call.TransA, call.TransB, call.M, call.N, call.K, call.Lda, call.Ldb, call.Ldc);
        if (_plans.TryGetValue(key, out var plan)) return plan;
        int compute = call.Precision == GemmPrecision.Tf32 ? CublasLt.Compute32FFastTf32 : CublasLt.Compute32F;
        int inputType = call.Precision == GemmPrecision.Bf16 ? CublasLt.R16BF : CublasLt.R32F;
        // Column-major view: first operand = B (n × k after op), second = A (k × m after op), result n × m.
        int opFirst = call.TransB ? CublasLt.OpT : CublasLt.OpN, opSecond = call.TransA ? CublasLt.OpT : CublasLt.OpN;
        plan = new Plan();
        CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(out plan.Op, compute, CublasLt.R32F), "cublasLtMatmulDescCreate");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescTransA, &opFirst, sizeof(int)), "set TRANSA");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescTransB, &opSecond, sizeof(int)), "set TRANSB");
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.A, inputType,
            (ulong)(call.TransB ? call.K : call.N), (ulong)(call.TransB ? call.N : call.K), call.Ldb), "cublasLtMatrixLayoutCreate(B)");
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.B, inputType,
            (ulong)(call.TransA ? call.M : call.K), (ulong)(call.TransA ? call.K : call.M), call.Lda), "cublasLtMatrixLayoutCreate(A)");
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.C, CublasLt.R32F, (ulong)call.N, (ulong)call.M, call.Ldc), "cublasLtMatrixLayoutCreate(C)");
        plan.Heuristic = BestAlgorithm(plan.Op, plan.A, plan.B, plan.C, plan.C,
            $"{call.Precision} GEMM {call.M}x{call.N}x{call.K} {(call.TransA ? 'T' : 'N')}{(call.TransB ? 'T' : 'N')}");
        _plans[key] = plan;
        return plan;
    }

    private CublasLt.HeuristicResult BestAlgorithm(IntPtr op, IntPtr a, IntPtr b, IntPtr c, IntPtr d, string what) =>
        Algorithms(op, a, b, c, d, what, 1)[0];

    /// <summary>Up to <paramref name="count"/> algorithms, the heuristic's favourite first.</summary>
    private CublasLt.HeuristicResult[] Algorithms(IntPtr op, IntPtr a, IntPtr b, IntPtr c, IntPtr d, string what, int count)
    {
        CublasLt.Check(CublasLt.cublasLtMatmulPreferenceCreate(out IntPtr preference), "cublasLtMatmulPreferenceCreate");
        try
        {
            ulong workspace = WorkspaceBytes;
            CublasLt.Check(CublasLt.cublasLtMatmulPreferenceSetAttribute(preference, CublasLt.PrefMaxWorkspaceBytes, &workspace, sizeof(ulong)), "set MAX_WORKSPACE_BYTES");
            var results = new CublasLt.HeuristicResult[count];
            int returned;
            fixed (CublasLt.HeuristicResult* p = results)
                CublasLt.Check(CublasLt.cublasLtMatmulAlgoGetHeuristic(_handle, op, a, b, c, d, preference, count, p, out returned),
                    $"cublasLtMatmulAlgoGetHeuristic ({what})");
            if (returned == 0) throw new CudaException($"cuBLASLt has no algorithm for {what}");
            return results[..returned];
        }
        finally
        {
            CublasLt.cublasLtMatmulPreferenceDestroy(preference);
        }
    }

    /// <summary>
    /// DeepSeek-V3's FP8 GEMM (training.md, FP8): Y[m, n] = X[m, k] · W[n, k]ᵀ with E4M3 operands, X scaled per 1×128
    /// tile and W per 128×128 block, fp32 accumulation (cuBLASLt's VEC128_32F and BLK128x128_32F scale modes, Hopper,
    /// cuBLAS 12.9+). Scales must be in cuBLASLt's layouts (<see cref="Fp8ScaleLayout"/>). The first arrangement this
    /// cuBLASLt has an algorithm for is used (which operand comes first, fp32 or BF16 output); the result says which.
    /// </summary>
    public string Fp8BlockScaled(int m, int n, int k, DevicePtr xCodes, DevicePtr xScales, DevicePtr wCodes, DevicePtr wScales, DevicePtr y)
    {
        _runtime.MakeCurrent();
        var key = new PlanKey(100, false, true, m, n, k, k, k, n);
        if (!_plans.TryGetValue(key, out var plan))
        {
            var tried = new List<string>();
            foreach (bool weightFirst in new[] { true, false })
                foreach (int output in new[] { CublasLt.R32F, CublasLt.R16BF })
                {
                    plan = CreateFp8Plan(m, n, k, weightFirst, output, xScales, wScales, tried);
                    if (plan is not null) goto found;
                }
            throw new CudaException($"cuBLASLt has no block-scaled FP8 algorithm for {m}x{n}x{k} (needs Hopper and cuBLAS 12.9+; tried: {string.Join("; ", tried)})");
        found:
            _plans[key] = plan!;
            var chosen = plan!;
            ulong firstScales = chosen.WeightFirst ? wScales.Address : xScales.Address, secondScales = chosen.WeightFirst ? xScales.Address : wScales.Address;
            EnsureBf16((long)m * n * 4 + 512);
            DevicePtr probeOut = chosen.WeightFirst && !chosen.Bf16Output ? y : _bf16;
            Tune(chosen, algo =>
            {
                float alpha = 1f, beta = 0f;
                ulong first = firstScales, second = secondScales;
                CublasLt.cublasLtMatmulDescSetAttribute(chosen.Op, CublasLt.DescAScalePointer, &first, sizeof(ulong));
                CublasLt.cublasLtMatmulDescSetAttribute(chosen.Op, CublasLt.DescBScalePointer, &second, sizeof(ulong));
                return CublasLt.cublasLtMatmul(_handle, chosen.Op, &alpha, (chosen.WeightFirst ? wCodes : xCodes).Address, chosen.A,
                    (chosen.WeightFirst ? xCodes : wCodes).Address, chosen.B, &beta, probeOut.Address, chosen.C, probeOut.Address, chosen.C,
                    (void*)algo, _workspace.Address, (nuint)WorkspaceBytes, IntPtr.Zero);
            }, $"FP8 {m}x{n}x{k}");
        }
        bool weightFirstPlan = plan!.WeightFirst;
        ulong first = weightFirstPlan ? wScales.Address : xScales.Address, second = weightFirstPlan ? xScales.Address : wScales.Address;
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescAScalePointer, &first, sizeof(ulong)), "set A_SCALE_POINTER");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescBScalePointer, &second, sizeof(ulong)), "set B_SCALE_POINTER");
        float alpha = 1f, beta = 0f;
        long count = (long)m * n;
        // Weight first gives Y [m, n] directly; activation first gives Yᵀ [n, m], transposed afterwards.
        bool direct = weightFirstPlan && !plan.Bf16Output;
        long scratchBytes = (plan.Bf16Output ? count * 2 : 0) + (weightFirstPlan ? 0 : count * 4) + 512;
        if (!direct) EnsureBf16(scratchBytes);
        DevicePtr d = direct ? y : _bf16;
        fixed (ulong* algo = plan.Heuristic.Algo)
            CublasLt.Check(CublasLt.cublasLtMatmul(_handle, plan.Op, &alpha, (weightFirstPlan ? wCodes : xCodes).Address, plan.A,
                (weightFirstPlan ? xCodes : wCodes).Address, plan.B, &beta, d.Address, plan.C, d.Address, plan.C, algo, _workspace.Address,
                (nuint)WorkspaceBytes, IntPtr.Zero), "cublasLtMatmul(FP8)");
        if (direct) return plan.Description;
        DevicePtr wide = d;
        if (plan.Bf16Output)
        {
            wide = weightFirstPlan ? y : _bf16.Offset((count * 2 + 255) & ~255L);
            _args.Reset().Add(d).Add(wide).Add(count);
            _runtime.Launch("bf16_to_f32", new Dim3((uint)Math.Clamp((count + 255) / 256, 1, 65535)), new Dim3(256), 0, _args.Pointers);
        }
        if (!weightFirstPlan)
        {
            _args.Reset().Add(wide).Add(n).Add(m).Add(y).Add(n);
            _runtime.Launch("transpose_f32", new Dim3((uint)Math.Clamp((count + 255) / 256, 1, 65535)), new Dim3(256), 0, _args.Pointers);
        }
        return plan.Description;
    }

    private Plan? CreateFp8Plan(int m, int n, int k, bool weightFirst, int outputType, DevicePtr xScales, DevicePtr wScales, List<string> tried)
    {
        var plan = new Plan { WeightFirst = weightFirst, Bf16Output = outputType == CublasLt.R16BF };
        int opT = CublasLt.OpT, opN = CublasLt.OpN;
        int firstMode = weightFirst ? CublasLt.ScaleBlock128x128Fp32 : CublasLt.ScaleVec128Fp32;
        int secondMode = weightFirst ? CublasLt.ScaleVec128Fp32 : CublasLt.ScaleBlock128x128Fp32;
        // Hopper's FP8 GEMM is "TN": both operands k-contiguous, the first transposed. W [n, k] and X [m, k] row-major
        // are both column-major k × rows; the result is (first's rows) × (second's rows) column-major.
        int firstRows = weightFirst ? n : m, secondRows = weightFirst ? m : n;
        ulong firstScales = weightFirst ? wScales.Address : xScales.Address, secondScales = weightFirst ? xScales.Address : wScales.Address;
        CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(out plan.Op, CublasLt.Compute32F, CublasLt.R32F), "cublasLtMatmulDescCreate");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescTransA, &opT, sizeof(int)), "set TRANSA");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescTransB, &opN, sizeof(int)), "set TRANSB");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescAScaleMode, &firstMode, sizeof(int)), "set A_SCALE_MODE");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescBScaleMode, &secondMode, sizeof(int)), "set B_SCALE_MODE");
        // The heuristic may look at the scale pointers: give it the real ones.
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescAScalePointer, &firstScales, sizeof(ulong)), "set A_SCALE_POINTER");
        CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Op, CublasLt.DescBScalePointer, &secondScales, sizeof(ulong)), "set B_SCALE_POINTER");
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.A, CublasLt.R8FE4M3, (ulong)k, (ulong)firstRows, k), "layout first");
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.B, CublasLt.R8FE4M3, (ulong)k, (ulong)secondRows, k), "layout second");
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.C, outputType, (ulong)firstRows, (ulong)secondRows, firstRows), "layout out");
        string what = $"{(weightFirst ? "W·Xᵀ" : "X·Wᵀ")}, {(plan.Bf16Output ? "bf16" : "fp32")} out";
        try
        {
            plan.Heuristic = BestAlgorithm(plan.Op, plan.A, plan.B, plan.C, plan.C, $"FP8 {m}x{n}x{k}");
        }
        catch (CudaException e)
        {
            tried.Add($"{what}: {e.Message}");
            CublasLt.cublasLtMatmulDescDestroy(plan.Op);
            CublasLt.cublasLtMatrixLayoutDestroy(plan.A);
            CublasLt.cublasLtMatrixLayoutDestroy(plan.B);
            CublasLt.cublasLtMatrixLayoutDestroy(plan.C);
            return null;
        }
        plan.Description = $"cuBLASLt FP8 1x128/128x128 ({what})";
        return plan;
    }

    /// <summary>
    /// Times the heuristic's top algorithms on the call's own operands (one warm-up, then the best of three runs each)
    /// and keeps the fastest: the heuristic's first choice is a prediction, and on the FP8 and BF16 shapes of V3
    /// training another candidate may be faster. Only for products that overwrite their output (beta = 0). Opt-in
    /// (<c>DSS_CUBLASLT_TUNE=1</c>) until it has been measured on a GPU (docs/cuda.md).
    /// </summary>
    private void Tune(Plan plan, Func<IntPtr, int> matmul, string what)
    {
        if (Environment.GetEnvironmentVariable("DSS_CUBLASLT_TUNE") != "1") return;
        var candidates = Algorithms(plan.Op, plan.A, plan.B, plan.C, plan.C, what, 8);
        ulong* algo = stackalloc ulong[8];
        IntPtr algoPointer = (IntPtr)algo;
        double best = double.MaxValue;
        for (int ci = 0; ci < candidates.Length; ci++)
        {
            fixed (ulong* source = candidates[ci].Algo)
                for (int j = 0; j < 8; j++) algo[j] = source[j];
            if (matmul(algoPointer) != 0) continue;
            double fastest = double.MaxValue;
            for (int i = 0; i < 3; i++) fastest = Math.Min(fastest, _runtime.TimeMilliseconds(() => matmul(algoPointer)));
            if (fastest < best)
            {
                best = fastest;
                plan.Heuristic = candidates[ci];
            }
        }
    }

    private void TuneFor(Plan plan, GemmCall call) => Tune(plan, algo =>
    {
        float alpha = call.Alpha, beta = 0f;
        return CublasLt.cublasLtMatmul(_handle, plan.Op, &alpha, call.B.Address, plan.A, call.A.Address, plan.B, &beta,
            call.C.Address, plan.C, call.C.Address, plan.C, (void*)algo, _workspace.Address, (nuint)WorkspaceBytes, IntPtr.Zero);
    }, $"{call.Precision} GEMM {call.M}x{call.N}x{call.K}");

    /// <summary>A BF16 GEMM on operands already stored in BF16 (the benchmark's "weights kept in BF16" case).</summary>
    internal void GemmBf16Stored(in GemmCall call)
    {
        _runtime.MakeCurrent();
        var key = new PlanKey((int)GemmPrecision.Bf16, call.TransA, call.TransB, call.M, call.N, call.K, call.Lda, call.Ldb, call.Ldc);
        bool fresh = !_plans.ContainsKey(key);
        var plan = PlanFor(call with { Precision = GemmPrecision.Bf16 });
        if (fresh && call.Beta == 0) TuneFor(plan, call);
        float alpha = call.Alpha, beta = call.Beta;
        fixed (ulong* algo = plan.Heuristic.Algo)
            CublasLt.Check(CublasLt.cublasLtMatmul(_handle, plan.Op, &alpha, call.B.Address, plan.A, call.A.Address, plan.B, &beta,
                call.C.Address, plan.C, call.C.Address, plan.C, algo, _workspace.Address, (nuint)WorkspaceBytes, IntPtr.Zero), "cublasLtMatmul");
    }

    /// <summary>Converts <paramref name="count"/> fp32 values to BF16 on the device.</summary>
    internal void ConvertToBf16(DevicePtr source, long count, DevicePtr destination) => ToBf16(source, count, destination);

    public void Dispose()
    {
        foreach (var plan in _plans.Values)
        {
            CublasLt.cublasLtMatmulDescDestroy(plan.Op);
            CublasLt.cublasLtMatrixLayoutDestroy(plan.A);
            CublasLt.cublasLtMatrixLayoutDestroy(plan.B);
            CublasLt.cublasLtMatrixLayoutDestroy(plan.C);
        }
        _plans.Clear();
        _runtime.Free(_workspace);
        _runtime.Free(_bf16);
        CublasLt.cublasLtDestroy(_handle);
        _args.Dispose();
    }
}

/// <summary>
/// Where cuBLASLt's block-scaled FP8 modes read each scale (host-side, unit-tested): the activation's 1×128 scales
/// "outer-dimension-major" (the m rows contiguous for each 128-column block, m padded to a multiple of 4), the weight's
/// 128×128 scales row-major with the k-block count padded to a multiple of 4. Our quantiser writes both row-major
/// [rows, blocks]; the backend rearranges them with these offsets.
/// </summary>
public static class Fp8ScaleLayout
{
    public static int PaddedRows(int m) => (m + 3) & ~3;

    public static int KBlocks(int k) => (k + 127) / 128;

    public static int PaddedKBlocks(int k) => (KBlocks(k) + 3) & ~3;

    /// <summary>Offset of the scale of activation row <paramref name="row"/>, k-block <paramref name="kBlock"/>.</summary>
    public static long ActivationOffset(int m, int row, int kBlock) => (long)kBlock * PaddedRows(m) + row;

    /// <summary>Floats in the activation scale tensor.</summary>
    public static long ActivationLength(int m, int k) => (long)KBlocks(k) * PaddedRows(m);

    /// <summary>Offset of the scale of weight block (<paramref name="nBlock"/>, <paramref name="kBlock"/>).</summary>
    public static long WeightOffset(int k, int nBlock, int kBlock) => (long)nBlock * PaddedKBlocks(k) + kBlock;

    public static long WeightLength(int n, int k) => (long)((n + 127) / 128) * PaddedKBlocks(k);

    /// <summary>Rearranges row-major [m, kBlocks] activation scales into cuBLASLt's layout (padding = 1).</summary>
    public static float[] ActivationScales(ReadOnlySpan<float> rowMajor, int m, int k)
    {
        int kb = KBlocks(k);
        var result = new float[ActivationLength(m, k)];
        Array.Fill(result, 1f);
        for (int r = 0; r < m; r++)
            for (int b = 0; b < kb; b++) result[ActivationOffset(m, r, b)] = rowMajor[r * kb + b];
        return result;
    }

    /// <summary>Rearranges row-major [nBlocks, kBlocks] weight scales into cuBLASLt's layout (padding = 1).</summary>
    public static float[] WeightScales(ReadOnlySpan<float> rowMajor, int n, int k)
    {
        int kb = KBlocks(k), nb = (n + 127) / 128;
        var result = new float[WeightLength(n, k)];
        Array.Fill(result, 1f);
        for (int r = 0; r < nb; r++)
            for (int b = 0; b < kb; b++) result[WeightOffset(k, r, b)] = rowMajor[r * kb + b];
        return result;
    }
}
