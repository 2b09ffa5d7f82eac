using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Kernels;

/// <summary>
/// The backend new tensors get (<see cref="Tensors.Tensor.Backend"/>), chosen once per process by <c>--device</c> /
/// <c>device:</c>: the CPU backend unless a command selected another. Ops run on their inputs' backend, so a model
/// created after <see cref="Use"/> runs there entirely.
/// </summary>
public static class ComputeDevice
{
    private static IBackend? _current;

    public static IBackend Current => _current ?? CpuBackend.Default;

    /// <summary>Makes <paramref name="backend"/> the default until the returned scope is disposed.</summary>
    public static IDisposable Use(IBackend backend)
    {
        var previous = _current;
        _current = backend;
        return new Restore(previous);
    }

    private sealed class Restore(IBackend? previous) : IDisposable
    {
        public void Dispose() => _current = previous;
    }
}
