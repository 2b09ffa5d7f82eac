using DeepSeekSharp.Autograd;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Cpu;

namespace DeepSeekSharp.Tensors;

/// <summary>
/// A dense, row-major fp32 tensor. Storage lives on a backend (the CPU backend keeps a managed array);
/// a "meta" tensor has a shape but no storage, so a 671B-parameter model can be built for inspection.
/// When <see cref="RequiresGrad"/> is set and grad mode is on, ops record a <see cref="GradNode"/> so that
/// <see cref="Backprop.Backward"/> can fill <see cref="Grad"/>.
/// </summary>
public class Tensor
{
    private float[]? _data;
    // Storage rented from StoragePool that nobody else references: it goes back to the pool when this tensor drops it.
    private bool _pooled;
    // Dropped storage that the producing op rebuilds on the next read (activation recomputation, see DropForRecompute).
    private bool _recomputable;

    public Tensor(int[] shape, float[]? data, IBackend? backend = null)
    {
        Shape = shape;
        Length = ShapeUtil.Numel(shape);
        if (data is not null && data.Length < Length)
            throw new ArgumentException($"data has {data.Length} elements, shape [{string.Join(", ", shape)}] needs {Length}");
        _data = data;
        Backend = backend ?? ComputeDevice.Current;
    }

    /// <summary>Allocates uninitialised storage (callers overwrite every element), from <see cref="StoragePool"/>.</summary>
    public static Tensor Empty(params int[] shape)
    {
        int length = checked((int)ShapeUtil.Numel(shape));
        var tensor = new Tensor(shape, StoragePool.Rent(length)) { _pooled = true };
        TensorScope.Register(tensor);
        return tensor;
    }

    public static Tensor Zeros(params int[] shape)
    {
        int length = checked((int)ShapeUtil.Numel(shape));
        var tensor = new Tensor(shape, StoragePool.RentZeroed(length)) { _pooled = true };
        TensorScope.Register(tensor);
        return tensor;
    }

    public static Tensor Meta(params int[] shape) => new(shape, null);

    public static Tensor FromArray(float[] data, params int[] shape) => new(shape, data);

    public int[] Shape { get; }

    public int Rank => Shape.Length;

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    public IBackend Backend { get; }

    public bool IsMeta => _data is null;

    /// <summary>The storage array; may be longer than <see cref="Length"/> when pooled.</summary>
    public float[] Data => _data ?? Rematerialize() ?? throw new InvalidOperationException("tensor has no storage (meta tensor)");

    private float[]? Rematerialize()
    {
        if (!_recomputable || GradFn?.RecomputeOutput(this) is not { } data) return null;
        _data = data;
        _pooled = true;
        return data;
    }

    /// <summary>
    /// Drops the values of an intermediate the backward still reads, when the op that produced it can rebuild them from
    /// what the graph keeps anyway (<see cref="GradNode.CanRecomputeOutput"/>: an RMSNorm from its input, a Linear from
    /// its input and weight or its FP8 copies, RoPE from its own recomputable input). The next read, in the backward,
    /// recomputes them. DeepSeek-V3 recomputes its RMSNorms and MLA up-projections this way instead of storing them.
    /// </summary>
    /// <returns>whether the values were dropped</returns>
    internal bool DropForRecompute()
    {
        if (_data is null || !_pooled || GradFn is not { CanRecomputeOutput: true }) return false;
        DropStorage();
        _recomputable = true;
        return true;
    }

    /// <summary>
    /// The owner's recomputation policy (<see cref="Nn.Layer.RecomputeOutput"/>): when the <see cref="TensorScope"/> holding
    /// this tensor ends, its values are dropped for recomputation (<see cref="DropForRecompute"/>) rather than kept for a
    /// backward that reads them. Ops that keep no input of their own (RoPE) pass it on to their output.
    /// </summary>
    internal bool RecomputeWhenReleased { get; set; }

    /// <summary>Whether reading the values works: they are here, or the producing op will recompute them.</summary>
    internal bool CanBeRead => _data is not null || _recomputable;

    public Span<float> Span => Data.AsSpan(0, checked((int)Length));

    public bool RequiresGrad { get; set; }

    /// <summary>Accumulated gradient (same length as the tensor), allocated on first use by backward.</summary>
    public float[]? Grad { get; set; }

    /// <summary>The op that produced this tensor, when it was recorded for backward.</summary>
    internal GradNode? GradFn { get; set; }

    /// <summary>How many recorded ops read this tensor's values in their backward.</summary>
    internal int BackwardReaders { get; set; }

    /// <summary>
    /// Drops the storage of an intermediate once its forward consumers have run, if no recorded op will read its
    /// values in the backward (e.g. the input of an FP8 Linear, which keeps its own FP8 copy). Its gradient still
    /// flows; only reading its values afterwards fails. Modules call this on their own intermediates.
    /// </summary>
    /// <returns>whether the storage was dropped</returns>
    public bool ReleaseIfUnread()
    {
        if (_data is null || this is Parameter || BackwardReaders > 0 || GradFn is { ReadsOutput: true }) return false;
        DropStorage();
        return true;
    }

    /// <summary>Another tensor now shares this storage (a reshape), so it must never go back to the pool.</summary>
    internal void ShareStorage() => _pooled = false;

    /// <summary>Whether the storage came from <see cref="StoragePool"/> and is this tensor's alone.</summary>
    internal bool OwnsPooledStorage => _pooled;

    /// <summary>Drops the storage, returning it to the pool when this tensor owns it alone; reading afterwards throws
    /// (or recomputes, after <see cref="DropForRecompute"/>, unless <paramref name="forever"/>).</summary>
    internal void DropStorage(bool forever = false)
    {
        if (forever) _recomputable = false;
        if (_data is null) return;
        if (_pooled) StoragePool.Return(_data);
        _data = null;
        _pooled = false;
    }

    public int Dim(int axis) => Shape[axis < 0 ? Shape.Length + axis : axis];

    /// <summary>Gives this tensor storage (used for meta tensors that get materialised, e.g. on load).</summary>
    public void Materialize(float[]? data = null)
    {
        _data = data ?? new float[checked((int)Length)];
        _pooled = false;
    }

    /// <summary>Drops storage and gradient (turning the tensor back into a meta tensor).</summary>
    public void Release()
    {
        _data = null;
        _pooled = false;
        Grad = null;
    }

    public void ZeroGrad()
    {
        if (Grad is not null) Array.Clear(Grad);
    }

    public override string ToString() => $"Tensor[{string.Join(", ", Shape)}]";
}
