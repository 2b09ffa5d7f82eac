using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Autograd;

namespace DeepSeekSharp.Tests.Tensors;

/// <summary>
/// The pool's policy (size classes, reuse, the octave above, trimming, the byte pool), each test on a pool of its own:
/// the process's pool lends and takes back arrays for every test running beside these, and an assertion about which
/// array comes back would depend on them.
/// </summary>
public class StoragePoolTests
{
    private const int MinLength = 16 * 1024;
    private const int OddLength = 1_900_003;

    private static SizeClassPool NewPool() => new(MinLength, maxBytes: 1L << 30);

    [Fact]
    public void SizeClassesCoverTheRequestWithAtMostAnEighthSlackAndAreStable()
    {
        var rng = new Random(3);
        for (int i = 0; i < 20_000; i++)
        {
            int length = i < 5_000 ? i : rng.Next(1, 50_000_000);
            foreach (int minLength in (int[])[1, MinLength])
            {
                int size = SizeClassPool.ClassLength(length, minLength);
                Assert.True(size >= length, $"{length} -> {size}");
                Assert.True(size <= length + length / 8 + 1, $"{length} -> {size}");
                Assert.Equal(size, SizeClassPool.ClassLength(size, minLength));
            }
        }
    }

    [Fact]
    public void AReturnedArrayServesTheNextRequestOfItsClass()
    {
        var pool = NewPool();
        float[] a = pool.Rent(OddLength);
        Assert.True(a.Length >= OddLength);
        pool.Return(a);
        Assert.Equal(4L * a.Length, pool.HeldBytes);
        Assert.Same(a, pool.Rent(OddLength - 5));
        Assert.Equal(0, pool.HeldBytes);
        Assert.All(StoragePool.RentZeroed(7), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void ArraysBelowTheMinimumAreNotPooled()
    {
        var pool = NewPool();
        float[] small = pool.Rent(MinLength - 1);
        Assert.Equal(MinLength - 1, small.Length);
        pool.Return(small);
        Assert.Equal(0, pool.HeldBytes);
        Assert.NotSame(small, pool.Rent(MinLength - 1));
    }

    [Fact]
    public void AnEmptyClassIsServedByAnIdleArrayAtMostAnOctaveAbove()
    {
        // One array in a class, then requests a few classes and over an octave below it.
        const int Large = 7_300_001;
        var pool = NewPool();
        float[] a = pool.Rent(Large);
        pool.Return(a);
        float[] tooSmall = pool.Rent(Large / 2 - 500_000);      // more than an octave below: a new array
        Assert.NotSame(a, tooSmall);
        Assert.Same(a, pool.Rent(Large * 3 / 4));              // a few classes below: the idle larger array
        pool.Return(a);
        Assert.Same(a, pool.Rent(Large - 1));                   // its own class still finds it
    }

    [Fact]
    public void ByteArraysArePooledApartFromFloatArrays()
    {
        const int Length = 5_100_007;
        var pool = NewPool();
        byte[] codes = pool.RentBytes(Length);
        Assert.True(codes.Length >= Length && codes.Length <= Length + Length / 8 + 1);
        pool.ReturnBytes(codes);
        Assert.Equal(codes.Length, pool.HeldBytes);
        float[] floats = pool.Rent(Length / 4);                 // the same bytes as floats: not served by the byte array
        Assert.Equal(codes.Length, pool.HeldBytes);
        Assert.Same(codes, pool.RentBytes(Length - 3));
        GC.KeepAlive(floats);
    }

    [Fact]
    public void ASizeClassNobodyAskedForIsTrimmedAndOneAskedForIsKept()
    {
        var pool = NewPool();
        float[] unasked = pool.Rent(OddLength + 3_000_000);
        float[] asked = pool.Rent(OddLength);
        pool.Return(unasked);
        pool.Return(asked);
        Assert.Same(asked, pool.Rent(OddLength));             // its class was asked for since it was created
        pool.Return(asked);
        pool.TrimUnused();
        Assert.Equal(4L * asked.Length, pool.HeldBytes);
        Assert.NotSame(unasked, pool.Rent(OddLength + 3_000_000));
        Assert.Same(asked, pool.Rent(OddLength));
    }

    [Fact]
    public void WhatWouldPassTheCapIsLeftToTheCollector()
    {
        var pool = new SizeClassPool(MinLength, maxBytes: 4L * OddLength * 3 / 2);
        float[] a = pool.Rent(OddLength), b = pool.Rent(OddLength);
        pool.Return(a);
        pool.Return(b);                                         // would hold two arrays: over the cap
        Assert.Equal(4L * a.Length, pool.HeldBytes);
        Assert.Same(a, pool.Rent(OddLength));
        Assert.NotSame(b, pool.Rent(OddLength));
    }

    private static (float[] Dx, float[] Dw, Tensor Hidden, Tensor Gate) Step(bool freeActivations)
    {
        var rng = new Random(9);
        var x = GradCheck.Random(rng, 1, 6, 10); var w = GradCheck.Random(rng, 1, 8, 10); var w2 = GradCheck.Random(rng, 1, 5, 8);
        var h = Functional.Linear(x, w);
        var g = Functional.Sigmoid(h);
        var loss = Functional.CrossEntropy(Functional.Linear(Functional.SiluMul(g, h), w2), [0, 1, 2, 3, 4, 0]);
        Backprop.Backward(loss, freeActivations);
        Assert.Single(loss.Span.ToArray()); // the root stays readable either way
        return (x.Grad!.AsSpan(0, (int)x.Length).ToArray(), w.Grad!.AsSpan(0, (int)w.Length).ToArray(), h, g);
    }

    [Fact]
    public void FreeingActivationsInTheBackwardLeavesGradientsUnchangedAndDropsTheValues()
    {
        var kept = Step(freeActivations: false);
        var freed = Step(freeActivations: true);
        Assert.Equal(kept.Dx, freed.Dx);
        Assert.Equal(kept.Dw, freed.Dw);
        Assert.Equal(kept.Hidden.Length, kept.Gate.Span.Length);        // still readable by default
        Assert.Throws<InvalidOperationException>(() => freed.Hidden.Span.ToArray());
        Assert.Throws<InvalidOperationException>(() => freed.Gate.Span.ToArray());
    }
}

/// <summary>
/// Tensors giving their storage back to the process's pool: these read which array the shared pool lends next, so
/// they run alone (no other test lends or trims in between).
/// </summary>
[Collection(nameof(PoolCheckingCollection))]
public class SharedStoragePoolTests
{
    private const int OddLength = 1_900_003;

    [Fact]
    public void AReleasedTensorGivesItsStorageBackButAReshapedOneDoesNot()
    {
        using (GradMode.NoGrad())
        {
            var t = Tensor.Empty(OddLength + 1);
            float[] storage = t.Data;
            Assert.True(t.ReleaseIfUnread());
            float[] again = StoragePool.Rent(OddLength + 1);
            Assert.Same(storage, again);

            var u = Tensor.FromArray(again, OddLength + 1);
            var owned = Tensor.Empty(OddLength + 2);
            var view = Functional.Reshape(owned, 1, OddLength + 2);   // shares owned's storage
            owned.Span.Fill(3f);
            Assert.True(owned.ReleaseIfUnread());
            Assert.NotSame(view.Data, StoragePool.Rent(OddLength + 2));
            Assert.All(view.Span.ToArray(), v => Assert.Equal(3f, v));
            GC.KeepAlive(u);
        }
    }
}
