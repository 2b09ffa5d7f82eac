using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>
/// The right-hand operand op(B) [k, n] of several GEMMs, packed once by <see cref="IBackend.PackGemmB"/> in the
/// backend's own layout (the output head's weight, shared by every row block of the blockwise cross-entropy).
/// Storage comes from the pool; dispose it to hand it back.
/// </summary>
public sealed class PackedMatrix : IDisposable
{
    private float[]? _data;

    internal PackedMatrix(int n, int k, float[] data)
    {
        (N, K, _data) = (n, k, data);
    }

    /// <summary>Columns of op(B) (and of every product's C).</summary>
    public int N { get; }

    /// <summary>Rows of op(B): the products' depth.</summary>
    public int K { get; }

    internal float[] Data => _data ?? throw new ObjectDisposedException(nameof(PackedMatrix));

    public void Dispose()
    {
        if (_data is null) return;
        StoragePool.Return(_data);
        _data = null;
    }
}
