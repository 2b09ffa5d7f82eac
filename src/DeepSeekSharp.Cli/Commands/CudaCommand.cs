using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DeepSeekSharp.Autograd;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;
using DeepSeekSharp.Kernels.Cuda;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli.Commands;

/// <summary><c>dss cuda info|check|gemm|fp8-study</c>: the CUDA backend's device checks and GPU benchmarks.</summary>
internal static class CudaCommand
{
    public static Command Create()
    {
        var group = new Command("cuda", "The CUDA backend on an NVIDIA GPU: device info, the check against the CPU backend and the reference fixtures, GEMM benchmarks, the FP8 error study");
        group.Subcommands.Add(Info());
        group.Subcommands.Add(Check());
        group.Subcommands.Add(Gemm());
        group.Subcommands.Add(Fp8Study());
        return group;
    }

    /// <summary><c>--device cpu|cuda</c> for commands that run a model.</summary>
    public static Option<string> DeviceOption()
    {
        var o = new Option<string>("--device") { Description = "where the model runs: cpu, or cuda (an NVIDIA GPU)", DefaultValueFactory = _ => "cpu" };
        o.AcceptOnlyFromAmong("cpu", "cuda");
        return o;
    }

    /// <summary>Makes new tensors use the named device until disposed (nothing for cpu).</summary>
    public static IDisposable UseDevice(string device)
    {
        if (device != "cuda") return new NoScope();
        var runtime = CudaRuntime.Open();
        var backend = new CudaBackend(runtime);
        var scope = ComputeDevice.Use(backend);
        return new DeviceScope(scope, backend, runtime);
    }

    private sealed class NoScope : IDisposable
    {
        public void Dispose() { }
    }

    private sealed class DeviceScope(IDisposable scope, CudaBackend backend, CudaRuntime runtime) : IDisposable
    {
        public void Dispose()
        {
            scope.Dispose();
            backend.Dispose();
            runtime.Dispose();
        }
    }

    private static Command Info()
    {
        var cmd = new Command("info", "Open the GPU, compile (or load the cached) kernels, print the device and library versions");
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var sw = Stopwatch.StartNew();
            using var gpu = CudaRuntime.Open();
            Console.WriteLine($"{gpu.Description}; kernels {gpu.ModuleOrigin} in {sw.Elapsed.TotalSeconds:F2} s; {CudaDiagnostics.Versions()}");
            return 0;
        }));
        return cmd;
    }

    private static Command Check()
    {
        var fixtures = new Option<string>("--fixtures") { Description = "folder of the reference fixtures (tests/DeepSeekSharp.Tests/Fixtures)", DefaultValueFactory = _ => "tests/DeepSeekSharp.Tests/Fixtures" };
        var output = new Option<string?>("--out") { Description = "also write the results as JSON here" };
        var cmd = new Command("check", "Every backend operation on the GPU against the CPU backend (forward and backward, random inputs), the reference fixtures' logits and gradients on the GPU, and the FP8 GEMM's scale layouts") { fixtures, output };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            var report = new Dictionary<string, object>();
            var sw = Stopwatch.StartNew();
            using var gpu = CudaRuntime.Open();
            string header = $"{gpu.Description}; kernels {gpu.ModuleOrigin} in {sw.Elapsed.TotalSeconds:F2} s; {CudaDiagnostics.Versions()}";
            Console.WriteLine(header);
            report["device"] = header;
            report["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
            int failures = 0;

            using var backend = new CudaBackend(gpu);
            var ops = new BackendComparison(backend, CpuBackend.Default, seed: 11, large: true).RunAll();
            Console.WriteLine("\n| operation (CUDA vs CPU backend) | error | tolerance | ms | result |\n|---|---|---|---|---|");
            foreach (var o in ops)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {o.Name} | {o.Error:g3} | {o.Tolerance:g3} | {o.Milliseconds:F1} | {(o.Passed ? "pass" : "FAIL " + o.Failure)} |"));
                if (!o.Passed) failures++;
            }
            report["operations"] = ops.Select(o => new { name = o.Name, error = double.IsFinite(o.Error) ? o.Error : -1, tolerance = o.Tolerance, ms = o.Milliseconds, passed = o.Passed, failure = o.Failure }).ToList();

            var fixtureRows = new List<object>();
            Console.WriteLine("\n| fixture on the GPU (vs PyTorch float64) | logits max abs error (tol 1e-4) | loss error (tol 1e-4) | worst gradient (tol 1e-3 rel.) | seconds | result |\n|---|---|---|---|---|---|");
            foreach (string name in new[] { "v3-tiny", "v3-tiny-fp8", "v2-lite-tiny", "v2-group-tiny" })
            {
                string dir = Path.Combine(r.GetValue(fixtures)!, name);
                try
                {
                    var t = Stopwatch.StartNew();
                    var (logits, loss, grad) = FixtureErrors(dir, backend);
                    bool ok = logits <= 1e-4 && loss <= 1e-4 && grad < 1e-3;
                    if (!ok) failures++;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {logits:g3} | {loss:g3} | {grad:g3} | {t.Elapsed.TotalSeconds:F1} | {(ok ? "pass" : "FAIL")} |"));
                    fixtureRows.Add(new { fixture = name, logits_error = logits, loss_error = loss, gradient_error = grad, passed = ok });
                }
                catch (Exception e) when (e is DeepSeekSharpException or IOException or InvalidOperationException or ArgumentException)
                {
                    failures++;
                    Console.WriteLine($"| {name} | | | | | FAIL {e.GetType().Name}: {e.Message} |");
                    fixtureRows.Add(new { fixture = name, failure = e.Message, passed = false });
                }
            }
            report["fixtures"] = fixtureRows;

            Console.WriteLine("\n| FP8 scale layout given to cuBLASLt | error vs fp64 of the quantised inputs | kernel |\n|---|---|---|");
            var probe = CudaDiagnostics.ProbeFp8ScaleLayouts(gpu);
            foreach (var (layout, error, kernel) in probe)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {layout} | {error:g3} | {kernel} |"));
            report["fp8_scale_layouts"] = probe.Select(p => new { layout = p.Layout, error = double.IsFinite(p.Error) ? p.Error : -1, kernel = p.Kernel }).ToList();
            if (!(probe[0].Error < 1e-3)) failures++;

            Console.WriteLine($"\n{ops.Count + fixtureRows.Count + 1 - failures} passed, {failures} failed");
            if (r.GetValue(output) is { } path)
                File.WriteAllText(path, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
            return failures == 0 ? 0 : 1;
        }));
        return cmd;
    }

    /// <summary>Logits, loss and every gradient of a fixture with the model on <paramref name="backend"/>: the errors of ReferenceParityTests.</summary>
    private static (double Logits, double Loss, double Gradient) FixtureErrors(string dir, IBackend backend)
    {
        using var scope = ComputeDevice.Use(backend);
        var model = ModelCheckpoint.Load(dir);
        using var expected = SafeTensorsReader.Open(Path.Combine(dir, "expected.safetensors"));
        int[] tokens = expected.ReadInt64("tokens").Select(t => (int)t).ToArray();
        float[] logits;
        using (GradMode.NoGrad()) logits = model.Forward(tokens, SequenceBatch.Training(1, tokens.Length)).Logits.Span.ToArray();
        var want = expected.ReadFloat32("logits");
        double logitError = want.Zip(logits, (a, b) => Math.Abs(a - b)).Max();
        float w = expected.ReadFloat32("mtp_weight")[0];
        var loss = LanguageModelLoss.Compute(model, tokens, SequenceBatch.Training(1, tokens.Length), w, w > 0 ? 1 : 0);
        Backprop.Backward(loss.Total);
        double lossError = Math.Abs(loss.Total.Span[0] - expected.ReadFloat32("loss")[0]);
        double worst = 0;
        foreach (var (name, p) in model.NamedParameters())
        {
            var g = expected.ReadFloat32("grad." + name);
            var got = p.Grad ?? new float[p.Length];
            double scale = Math.Max(1e-6, g.Max(Math.Abs));
            for (int i = 0; i < g.Length; i++) worst = Math.Max(worst, Math.Abs(g[i] - got[i]) / scale);
        }
        return (logitError, lossError, worst);
    }

    private static Command Gemm()
    {
        var m = new Option<int>("--m") { Description = "rows of X and Y (tokens)", DefaultValueFactory = _ => 4096 };
        var n = new Option<int>("--n") { Description = "rows of W (output features)", DefaultValueFactory = _ => 7168 };
        var k = new Option<int>("--k") { Description = "inner dimension (input features)", DefaultValueFactory = _ => 2048 };
        var precision = new Option<string[]>("--precision") { Description = "fp32, tf32, bf16, fp8 (block-scaled E4M3); repeatable", DefaultValueFactory = _ => ["bf16", "fp8"], AllowMultipleArgumentsPerToken = true };
        var iterations = new Option<int>("--iterations") { Description = "timed repetitions (median reported)", DefaultValueFactory = _ => 20 };
        var json = new Option<bool>("--json") { Description = "one JSON line per precision" };
        var cmd = new Command("gemm", "Y[m,n] = X[m,k]·W[n,k]ᵀ on the GPU with device-resident operands: TFLOP/s (median, device events) and the error of the first rows against fp64") { m, n, k, precision, iterations, json };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            int mm = r.GetValue(m), nn = r.GetValue(n), kk = r.GetValue(k), it = r.GetValue(iterations);
            if (mm <= 0 || nn <= 0 || kk <= 0 || it <= 0) throw new DeepSeekSharpException("--m, --n, --k and --iterations must be positive");
            using var gpu = CudaRuntime.Open();
            if (!r.GetValue(json)) Console.WriteLine(gpu.Description);
            foreach (string p in r.GetValue(precision)!)
            {
                var t = CudaDiagnostics.TimeGemm(gpu, p, mm, nn, kk, it);
                Console.WriteLine(r.GetValue(json)
                    ? JsonSerializer.Serialize(new { precision = t.Precision, m = t.M, n = t.N, k = t.K, ms_median = t.MedianMilliseconds, tflops = t.TeraFlops, kernel = t.Kernel, sample_error = t.SampleError })
                    : string.Create(CultureInfo.InvariantCulture, $"{t.Precision,-5} {t.M}x{t.N}x{t.K}: {t.TeraFlops:F1} TFLOP/s (median {t.MedianMilliseconds:F3} ms; {t.Kernel}; error of 32 rows vs fp64 {t.SampleError:g3})"));
            }
            return 0;
        }));
        return cmd;
    }

    private static Command Fp8Study()
    {
        var json = new Option<bool>("--json") { Description = "one JSON line per K" };
        var cmd = new Command("fp8-study", "docs/fp8.md's FP8 GEMM error study on the GPU's tensor cores: relative error vs fp64 for K = 128..16384, beside the CPU emulation of promotion every 128") { json };
        cmd.SetAction(r => CliCommon.Run(() =>
        {
            using var gpu = CudaRuntime.Open();
            int[] ks = [128, 256, 512, 1024, 2048, 4096, 8192, 16384];
            if (!r.GetValue(json))
                Console.WriteLine($"{gpu.Description}\n| K | GPU (cuBLASLt FP8, 1x128/128x128) | GPU, accumulation only | CPU emulation, promoted every 128 | CPU, accumulation only |\n|---|---|---|---|---|");
            foreach (var row in CudaDiagnostics.Fp8Study(gpu, ks))
                Console.WriteLine(r.GetValue(json) ? JsonSerializer.Serialize(row) : string.Create(CultureInfo.InvariantCulture,
                    $"| {row.K} | {row.Gpu:P3} | {row.GpuAccumulationOnly:P4} | {row.CpuPromoted:P3} | {row.CpuPromotedAccumulationOnly:P4} |"));
            return 0;
        }));
        return cmd;
    }
}
