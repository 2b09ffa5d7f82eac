namespace DeepSeekSharp.Inference;

/// <summary>
/// MLA's inference cache for one sequence (model.md, "absorbed form"): per layer and token only the normalised
/// latent c_kv (kv_lora_rank floats) and the roped shared key k_pe (qk_rope_head_dim floats). Grows by doubling;
/// <see cref="Truncate"/> drops rejected speculative tokens.
/// </summary>
public sealed class LatentKvCache
{
    private readonly float[][] _cKv;
    private readonly float[][] _kPe;
    private int _capacity;

    public LatentKvCache(int layers, int latentDim, int ropeDim, int initialCapacity = 64)
    {
        Layers = layers;
        LatentDim = latentDim;
        RopeDim = ropeDim;
        _capacity = Math.Max(1, initialCapacity);
        _cKv = new float[layers][];
        _kPe = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            _cKv[l] = new float[_capacity * latentDim];
            _kPe[l] = new float[_capacity * ropeDim];
        }
    }

    public int Layers { get; }
    public int LatentDim { get; }
    public int RopeDim { get; }

    /// <summary>Tokens cached (the position of the next token).</summary>
    public int Length { get; private set; }

    /// <summary>Cache bytes per token (fp32): layers · (dc + dr) · 4.</summary>
    public long BytesPerToken => (long)Layers * (LatentDim + RopeDim) * sizeof(float);

    /// <summary>[capacity, dc] rows of layer <paramref name="layer"/>; the first <see cref="Length"/> (+ pending) are valid.</summary>
    public float[] LatentRows(int layer) => _cKv[layer];

    public float[] RopeKeyRows(int layer) => _kPe[layer];

    /// <summary>Makes room for <paramref name="extra"/> more tokens.</summary>
    public void Reserve(int extra)
    {
        int need = Length + extra;
        if (need <= _capacity) return;
        int cap = Math.Max(need, _capacity * 2);
        for (int l = 0; l < Layers; l++)
        {
            Array.Resize(ref _cKv[l], cap * LatentDim);
            Array.Resize(ref _kPe[l], cap * RopeDim);
        }
        _capacity = cap;
    }

    /// <summary>Commits <paramref name="count"/> tokens written at [Length, Length+count) in every layer.</summary>
    public void Advance(int count) => Length += count;

    /// <summary>
    /// A new cache holding this one's tokens, with room for <paramref name="extra"/> more: the G completions of a prompt
    /// start from copies of the prompt's cache, so the prompt is encoded once (copying dc + dr floats per token and layer
    /// is far cheaper than recomputing them).
    /// </summary>
    public LatentKvCache Fork(int extra = 0)
    {
        var copy = new LatentKvCache(Layers, LatentDim, RopeDim, Length + Math.Max(0, extra));
        for (int l = 0; l < Layers; l++)
        {
            _cKv[l].AsSpan(0, Length * LatentDim).CopyTo(copy._cKv[l]);
            _kPe[l].AsSpan(0, Length * RopeDim).CopyTo(copy._kPe[l]);
        }
        copy.Length = Length;
        return copy;
    }

    public void Truncate(int length)
    {
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length));
        Length = length;
    }
}
