using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>
/// The CUDA C++ of the backend's kernels (Sources/kernels.cu, embedded in the assembly), the NVRTC options it is
/// compiled with, and the cache key of a compiled module: a module is rebuilt exactly when the source, the options,
/// the target architecture or the compiler change.
/// </summary>
public static partial class KernelSource
{
    private static readonly Lazy<string> SourceText = new(() =>
    {
        using var stream = typeof(KernelSource).Assembly.GetManifestResourceStream("DeepSeekSharp.Kernels.Cuda.kernels.cu")
            ?? throw new InvalidOperationException("kernels.cu is not embedded in the assembly");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    });

    public static string Text => SourceText.Value;

    /// <summary>Every kernel entry point (<c>extern "C" __global__ void name(</c>) in the source, in order.</summary>
    public static IReadOnlyList<string> KernelNames(string source) =>
        EntryPoint().Matches(source).Select(m => m.Groups[1].Value).ToList();

    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+void\s+(\w+)\s*\(")]
    private static partial Regex EntryPoint();

    /// <summary>
    /// NVRTC options for compute capability major.minor: machine code for that exact target (sm_90 on Hopper), C++17,
    /// and no contraction of multiply-adds, so RoPE, SwiGLU and the quantisers round exactly as the CPU backend does.
    /// </summary>
    public static string[] CompileOptions(int major, int minor)
    {
        if (major < 7) throw new CudaException($"compute capability {major}.{minor} is too old (the backend needs 7.0 or newer)");
        return [$"--gpu-architecture=sm_{major}{minor}", "--std=c++17", "--fmad=false"];
    }

    /// <summary>SHA-256 over the source, the options and the compiler version: the file name of the cached CUBIN.</summary>
    public static string CacheKey(string source, IEnumerable<string> options, string compilerVersion)
    {
        var text = new StringBuilder(source).Append('\0').AppendJoin('\0', options).Append('\0').Append(compilerVersion);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>The cache folder: <c>DSS_CUDA_CACHE</c>, else $XDG_CACHE_HOME/dss/cuda, else ~/.cache/dss/cuda.</summary>
    public static string CacheFolder(Func<string, string?> environment)
    {
        if (environment("DSS_CUDA_CACHE") is { Length: > 0 } explicitFolder) return explicitFolder;
        string root = environment("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(environment("HOME") ?? Path.GetTempPath(), ".cache");
        return Path.Combine(root, "dss", "cuda");
    }
}
