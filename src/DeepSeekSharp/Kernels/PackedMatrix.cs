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

    internal PackedMatrix(int n, int k, float[] data, PackedLayout layout = PackedLayout.BlisPanels)
    {
        (N, K, _data, Layout) = (n, k, data, layout);
    }

    /// <summary>How the backend that packed it laid op(B) out; another backend's <c>GemmPackedB</c> refuses it.</summary>
    public PackedLayout Layout { get; }

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

/// <summary>The layouts of <see cref="PackedMatrix"/>: the CPU GEMM's panels, or plain row-major op(B) [k, n].</summary>
public enum PackedLayout { BlisPanels, RowMajor }
