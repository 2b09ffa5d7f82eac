using System.Reflection;
using System.Runtime.InteropServices;

namespace DeepSeekSharp.Kernels.Cuda.Native;

/// <summary>
/// Finds the CUDA libraries at run time (nothing links against them, so a machine without CUDA builds, tests and runs
/// everything else). Search order: <c>DSS_CUDA_LIBRARY_PATH</c> (colon-separated folders), the loader's own search
/// (LD_LIBRARY_PATH, ldconfig), <c>CUDA_HOME</c>/<c>CUDA_PATH</c>'s lib64, /usr/local/cuda/lib64, and the folders of the
/// NVIDIA Python wheels (…/site-packages/nvidia/cu13/lib and friends), newest major version first.
/// </summary>
internal static class NativeLibraries
{
    public const string Driver = "dss-cuda-driver";
    public const string Nvrtc = "dss-nvrtc";
    public const string CublasLt = "dss-cublaslt";

    private static readonly Dictionary<string, string[]> Candidates = new()
    {
        [Driver] = ["libcuda.so.1", "libcuda.so"],
        [Nvrtc] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
        [CublasLt] = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
    };

    private static int _registered;

    /// <summary>Installs the resolver for this assembly's CUDA imports (idempotent).</summary>
    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
    }

    /// <summary>Folders named by <c>DSS_CUDA_LIBRARY_PATH</c>: searched before anything else.</summary>
    internal static IEnumerable<string> ExplicitFolders(Func<string, string?> environment) =>
        (environment("DSS_CUDA_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>The folders searched after the loader's own search, in order.</summary>
    internal static IEnumerable<string> FallbackFolders(Func<string, string?> environment)
    {
        foreach (var home in new[] { environment("CUDA_HOME"), environment("CUDA_PATH") })
            if (!string.IsNullOrEmpty(home)) yield return Path.Combine(home, "lib64");
        yield return "/usr/local/cuda/lib64";
        yield return "/usr/local/cuda/targets/x86_64-linux/lib";
        foreach (var site in PythonSitePackages())
            foreach (var sub in new[] { "nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cuda_runtime/lib" })
                yield return Path.Combine(site, sub);
    }

    private static IEnumerable<string> PythonSitePackages()
    {
        foreach (var root in new[] { "/usr/local/lib", "/usr/lib", "/opt/torch/.venv/lib" })
        {
            if (!Directory.Exists(root)) continue;
            IEnumerable<string> pythons;
            try { pythons = Directory.EnumerateDirectories(root, "python3*").OrderDescending().ToList(); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            foreach (var py in pythons)
                foreach (var kind in new[] { "site-packages", "dist-packages" })
                    yield return Path.Combine(py, kind);
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!Candidates.TryGetValue(name, out var files)) return IntPtr.Zero;
        foreach (var dir in ExplicitFolders(Environment.GetEnvironmentVariable))
            foreach (var file in files)
                if (NativeLibrary.TryLoad(Path.Combine(dir, file), out var handle)) return handle;
        foreach (var file in files)
            if (NativeLibrary.TryLoad(file, out var handle)) return handle;
        foreach (var dir in FallbackFolders(Environment.GetEnvironmentVariable))
            foreach (var file in files)
            {
                string candidate = Path.Combine(dir, file);
                if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out var handle)) return handle;
            }
        return IntPtr.Zero;
    }
}
