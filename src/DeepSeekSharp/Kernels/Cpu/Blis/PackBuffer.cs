using System.Runtime.CompilerServices;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>
/// A grow-only, 64-byte aligned float buffer on the pinned object heap. Kernels keep one per thread
/// (<c>[ThreadStatic]</c>), so packing never allocates after warm-up and the memory is reclaimed with the thread.
/// </summary>
internal sealed unsafe class PackBuffer
{
    private float[] _array = [];
    private float* _aligned;
    private int _capacity;

    /// <summary>Returns an aligned pointer to at least <paramref name="floats"/> floats (contents undefined).</summary>
    public float* Get(int floats)
    {
        if (floats > _capacity)
        {
            int capacity = Math.Max(floats, _capacity + _capacity / 2);
            _array = GC.AllocateUninitializedArray<float>(capacity + 16, pinned: true);
            _aligned = (float*)(((nint)Unsafe.AsPointer(ref _array[0]) + 63) & ~(nint)63);
            _capacity = capacity;
        }
        return _aligned;
    }

    /// <summary>Returns the buffer held in <paramref name="slot"/>, creating it on first use.</summary>
    public static float* Get(ref PackBuffer? slot, int floats) => (slot ??= new PackBuffer()).Get(floats);
}
