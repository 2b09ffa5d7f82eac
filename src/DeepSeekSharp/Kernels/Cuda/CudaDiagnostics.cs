using System.Runtime.InteropServices;
using DeepSeekSharp.Fp8;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>One K of the GPU FP8 GEMM error study (relative Frobenius errors against fp64).</summary>
/// <param name="K">inner dimension</param>
/// <param name="Gpu">cuBLASLt's block-scaled FP8 GEMM against fp64 of the original inputs</param>
/// <param name="GpuAccumulationOnly">the same against fp64 of the quantised inputs (the accumulation's own error)</param>
/// <param name="CpuPromoted">our CPU emulation of promotion every 128 on the same inputs, against fp64 of the originals</param>
/// <param name="CpuPromotedAccumulationOnly">the CPU emulation against fp64 of the quantised inputs</param>
public sealed record Fp8GpuStudyRow(int K, double Gpu, double GpuAccumulationOnly, double CpuPromoted, double CpuPromotedAccumulationOnly);

/// <summary>A timed GEMM on the GPU: the median of repetitions after warm-up (device events).</summary>
public sealed record GpuGemmTiming(string Precision, int M, int N, int K, double MedianMilliseconds, double TeraFlops, string Kernel, double SampleError);

/// <summary>
/// The GPU checks of <c>dss cuda</c> that go beyond <see cref="BackendComparison"/>: the FP8 GEMM's error study
/// (docs/fp8.md's CPU study, on the tensor cores) and GEMM throughput with device-resident operands.
/// </summary>
public static unsafe class CudaDiagnostics
{
    private static (float[] X, float[] W) StudyInputs(int m, int n, int k, int seed) => Fp8ErrorStudy.Inputs(m, n, k, seed);

    /// <summary>fp64 Y[rows, n] = X[rows, k]·W[n, k]ᵀ for the first <paramref name="rows"/> rows of X.</summary>
    private static double[] Reference(float[] x, float[] w, int rows, int n, int k)
    {
        var y = new double[(long)rows * n];
        Parallel.For(0, rows, i =>
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (double)x[(long)i * k + p] * w[(long)j * k + p];
                y[(long)i * n + j] = s;
            }
        });
        return y;
    }

    private static double RelativeFrobenius(ReadOnlySpan<float> got, double[] want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double d = got[i] - want[i];
            num += d * d;
            den += want[i] * want[i];
        }
        return Math.Sqrt(num / Math.Max(den, 1e-300));
    }

    /// <summary>Quantises on the host (bit-identical to the device quantiser), uploads codes and cuBLASLt-layout scales.</summary>
    private sealed class Fp8Operands : IDisposable
    {
        private readonly IGpuRuntime _gpu;
        public DevicePtr XCodes, XScales, WCodes, WScales;
        public Fp8Tensor Qx, Qw;

        public Fp8Operands(IGpuRuntime gpu, float[] x, float[] w, int m, int n, int k, bool rowMajorActivationScales = false, bool transposedWeightScales = false)
        {
            _gpu = gpu;
            Qx = Fp8Quantizer.QuantizeRowTiles(x, m, k);
            Qw = Fp8Quantizer.QuantizeBlocks(w, n, k);
            XCodes = Put<byte>(Qx.Codes);
            WCodes = Put<byte>(Qw.Codes);
            float[] xs = rowMajorActivationScales ? Qx.Scales : Fp8ScaleLayout.ActivationScales(Qx.Scales, m, k);
            float[] ws = Fp8ScaleLayout.WeightScales(Qw.Scales, n, k);
            if (transposedWeightScales)
            {
                int nb = (n + 127) / 128, kb = Fp8ScaleLayout.KBlocks(k);
                ws = new float[nb * kb];
                for (int r = 0; r < nb; r++) for (int c = 0; c < kb; c++) ws[c * nb + r] = Qw.Scales[r * kb + c];
            }
            XScales = Put<float>(xs);
            WScales = Put<float>(ws);
        }

        private DevicePtr Put<T>(ReadOnlySpan<T> values) where T : unmanaged
        {
            var p = _gpu.Allocate((long)values.Length * sizeof(T));
            fixed (T* source = values) _gpu.Upload(p, source, (long)values.Length * sizeof(T));
            return p;
        }

        public void Dispose()
        {
            foreach (var p in new[] { XCodes, XScales, WCodes, WScales }) _gpu.Free(p);
        }
    }

    private static float[] Download(IGpuRuntime gpu, DevicePtr p, long count)
    {
        var values = new float[count];
        fixed (float* target = values) gpu.Download(target, p, count * sizeof(float));
        return values;
    }

    /// <summary>
    /// Which scale layouts cuBLASLt reads, found by experiment: the documented layouts (<see cref="Fp8ScaleLayout"/>)
    /// and the other arrangements, each run on random data with distinct scales per tile. Returns each variant with
    /// its error against fp64 of the dequantised inputs; the right one is at the level of fp32 accumulation.
    /// </summary>
    public static IReadOnlyList<(string Layout, double Error, string Kernel)> ProbeFp8ScaleLayouts(CudaRuntime gpu, int m = 256, int n = 384, int k = 640)
    {
        var (x, w) = StudyInputs(m, n, k, 7);
        var results = new List<(string, double, string)>();
        foreach (var (rowMajorX, transposedW) in new[] { (false, false), (true, false), (false, true), (true, true) })
        {
            string name = $"activation scales {(rowMajorX ? "row-major [m, k/128]" : "column-major [k/128, m]")}, weight scales {(transposedW ? "column-major" : "row-major")} ";
            try
            {
                using var ops = new Fp8Operands(gpu, x, w, m, n, k, rowMajorX, transposedW);
                var y = gpu.Allocate((long)m * n * sizeof(float));
                string kernel = gpu.Blas.Fp8BlockScaled(m, n, k, ops.XCodes, ops.XScales, ops.WCodes, ops.WScales, y);
                gpu.Synchronize();
                var got = Download(gpu, y, (long)m * n);
                gpu.Free(y);
                results.Add((name, RelativeFrobenius(got, Reference(ops.Qx.Dequantize(), ops.Qw.Dequantize(), m, n, k)), kernel));
            }
            catch (CudaException e)
            {
                results.Add((name, double.NaN, e.Message));
            }
        }
        return results;
    }

    /// <summary>docs/fp8.md's error study on the GPU's FP8 tensor cores (m = n = 128), beside our CPU emulation.</summary>
    public static IReadOnlyList<Fp8GpuStudyRow> Fp8Study(CudaRuntime gpu, IEnumerable<int> ks, int m = 128, int n = 128, int seed = 1)
    {
        var rows = new List<Fp8GpuStudyRow>();
        foreach (int k in ks)
        {
            var (x, w) = StudyInputs(m, n, k, seed);
            using var ops = new Fp8Operands(gpu, x, w, m, n, k);
            var y = gpu.Allocate((long)m * n * sizeof(float));
            gpu.Blas.Fp8BlockScaled(m, n, k, ops.XCodes, ops.XScales, ops.WCodes, ops.WScales, y);
            gpu.Synchronize();
            var got = Download(gpu, y, (long)m * n);
            gpu.Free(y);
            var exact = Reference(x, w, m, n, k);
            var quantisedExact = Reference(ops.Qx.Dequantize(), ops.Qw.Dequantize(), m, n, k);
            var cpu = Fp8Gemm.Multiply(ops.Qx, ops.Qw, Fp8Accumulation.PromoteEvery128);
            rows.Add(new Fp8GpuStudyRow(k, RelativeFrobenius(got, exact), RelativeFrobenius(got, quantisedExact),
                RelativeFrobenius(cpu, exact), RelativeFrobenius(cpu, quantisedExact)));
        }
        return rows;
    }

    /// <summary>
    /// Y[m, n] = X[m, k]·W[n, k]ᵀ (a Linear's forward) with device-resident random operands: <paramref name="precision"/>
    /// fp32, tf32, bf16 or fp8 (block-scaled E4M3). Median of <paramref name="iterations"/> after 5 warm-ups; the first
    /// 32 rows are checked against fp64 (of the quantised operands for fp8) so a fast wrong kernel cannot pass.
    /// </summary>
    public static GpuGemmTiming TimeGemm(CudaRuntime gpu, string precision, int m, int n, int k, int iterations = 20)
    {
        var rng = new Random(3);
        var x = Fp8ErrorStudy.Normal(rng, checked(m * k), 1.0);
        var w = Fp8ErrorStudy.Normal(rng, checked(n * k), 0.02);
        var y = gpu.Allocate((long)m * n * sizeof(float));
        var times = new List<double>();
        string kernel;
        double error;
        int sample = Math.Min(32, m);
        try
        {
            if (precision == "fp8")
            {
                using var ops = new Fp8Operands(gpu, x, w, m, n, k);
                kernel = gpu.Blas.Fp8BlockScaled(m, n, k, ops.XCodes, ops.XScales, ops.WCodes, ops.WScales, y);
                for (int i = 0; i < 5 + iterations; i++)
                {
                    double ms = gpu.TimeMilliseconds(() => gpu.Blas.Fp8BlockScaled(m, n, k, ops.XCodes, ops.XScales, ops.WCodes, ops.WScales, y));
                    if (i >= 5) times.Add(ms);
                }
                var got = Download(gpu, y, (long)sample * n);
                error = RelativeFrobenius(got, Reference(ops.Qx.Dequantize(), ops.Qw.Dequantize(), sample, n, k));
            }
            else
            {
                var p = precision switch
                {
                    "fp32" => GemmPrecision.Fp32,
                    "tf32" => GemmPrecision.Tf32,
                    "bf16" or "bf16-stored" => GemmPrecision.Bf16,
                    _ => throw new ArgumentException($"unknown precision '{precision}' (fp32, tf32, bf16, bf16-stored, fp8)"),
                };
                var dx = gpu.Allocate((long)m * k * sizeof(float));
                var dw = gpu.Allocate((long)n * k * sizeof(float));
                fixed (float* px = x) gpu.Upload(dx, px, (long)m * k * sizeof(float));
                fixed (float* pw = w) gpu.Upload(dw, pw, (long)n * k * sizeof(float));
                var call = new GemmCall(p, false, true, m, n, k, 1f, dx, k, dw, k, 0f, y, n);
                Action run = () => gpu.Gemm(call);
                if (precision == "bf16-stored")
                {
                    // Operands kept in BF16 (as a BF16 model's weights and activations are): converted once, outside the timing.
                    var bx = gpu.Allocate((long)m * k * 2);
                    var bw = gpu.Allocate((long)n * k * 2);
                    gpu.Blas.ConvertToBf16(dx, (long)m * k, bx);
                    gpu.Blas.ConvertToBf16(dw, (long)n * k, bw);
                    var stored = call with { A = bx, B = bw };
                    run = () => gpu.Blas.GemmBf16Stored(stored);
                }
                run();
                for (int i = 0; i < 5 + iterations; i++)
                {
                    double ms = gpu.TimeMilliseconds(run);
                    if (i >= 5) times.Add(ms);
                }
                var got = Download(gpu, y, (long)sample * n);
                error = RelativeFrobenius(got, Reference(x, w, sample, n, k));
                kernel = precision == "bf16-stored" ? "cuBLASLt Bf16, operands stored in BF16" : $"cuBLASLt {p}";
                gpu.Free(dx);
                gpu.Free(dw);
            }
        }
        finally
        {
            gpu.Free(y);
        }
        times.Sort();
        double median = times.Count % 2 == 1 ? times[times.Count / 2] : (times[times.Count / 2 - 1] + times[times.Count / 2]) / 2;
        return new GpuGemmTiming(precision, m, n, k, median, 2.0 * m * n * k / (median * 1e-3) / 1e12, kernel, error);
    }

    /// <summary>The CUDA libraries the process loaded (for the check's report).</summary>
    public static string Versions()
    {
        string cublas;
        try { cublas = CublasLtGemm.Version.ToString(System.Globalization.CultureInfo.InvariantCulture); }
        catch (DllNotFoundException) { cublas = "not found"; }
        string nvrtc;
        try
        {
            Native.Nvrtc.nvrtcVersion(out int major, out int minor);
            nvrtc = $"{major}.{minor}";
        }
        catch (DllNotFoundException) { nvrtc = "not found"; }
        return $"cuBLASLt {cublas}, NVRTC {nvrtc}, runtime {RuntimeInformation.FrameworkDescription}";
    }
}
