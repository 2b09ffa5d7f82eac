using DeepSeekSharp.Autograd;

namespace DeepSeekSharp.FineTuning.Lora;

/// <summary>
/// <c>lora_dropout</c> (PEFT's semantics): each adapter sees drop(x) = x ⊙ mask/(1 − p) while its Linear's base product
/// sees x unchanged. Dropout is on only inside <see cref="Begin"/>, which the training loop opens around each
/// micro-batch's forward and backward; validation, sampling, inference and merging run outside it and never drop. The
/// masks are functions of (seed, step, micro-batch, the Linear's path) and each element's index
/// (<see cref="DropoutMask"/>), so a resumed run draws the same masks as an uninterrupted one, with no generator state
/// to save. One instance is shared by every adapter of a model.
/// </summary>
public sealed class LoraDropout
{
    private (long Seed, long Step, int MicroBatch)? _current;

    public LoraDropout(float p)
    {
        if (!(p >= 0 && p < 1)) throw new DeepSeekSharpException($"lora_dropout must lie in [0, 1) (got {p})");
        P = p;
    }

    public float P { get; }

    /// <summary>Turns dropout on for micro-batch <paramref name="microBatch"/> of optimizer step <paramref name="step"/> until disposed.</summary>
    public IDisposable Begin(long seed, long step, int microBatch)
    {
        if (_current is not null) throw new InvalidOperationException("lora_dropout: a micro-batch is already open");
        _current = (seed, step, microBatch);
        return new Scope(this);
    }

    /// <summary>The mask for the adapter input of the Linear at <paramref name="path"/> now, or null when nothing is dropped.</summary>
    public DropoutMask? MaskFor(string path) =>
        P > 0 && _current is { } c ? DropoutMask.For(P, c.Seed, c.Step, c.MicroBatch, path) : null;

    private sealed class Scope(LoraDropout owner) : IDisposable
    {
        public void Dispose() => owner._current = null;
    }
}
