using DeepSeekSharp.Autograd;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Tests.Autograd;

namespace DeepSeekSharp.Tests.Tensors;

/// <summary><see cref="StoragePool"/>: size classes, reuse, and that only storage nobody else can see is reused.</summary>
public class StoragePoolTests
{
    // A length no other test uses, so tests running in parallel cannot take the array in between.
    private const int OddLength = 1_900_003;

    [Fact]
    public void SizeClassesCoverTheRequestWithAtMostAnEighthSlackAndAreStable()
    {
        var rng = new Random(3);
        for (int i = 0; i < 20_000; i++)
        {
            int length = i < 5_000 ? i : rng.Next(1, 50_000_000);
            int size = StoragePool.ClassLength(length);
            Assert.True(size >= length, $"{length} -> {size}");
            Assert.True(size <= length + length / 8 + 1, $"{length} -> {size}");
            Assert.Equal(size, StoragePool.ClassLength(size));
        }
    }

    [Fact]
    public void AReturnedArrayServesTheNextRequestOfItsClass()
    {
        float[] a = StoragePool.Rent(OddLength);
        Assert.True(a.Length >= OddLength);
        StoragePool.Return(a);
        Assert.Same(a, StoragePool.Rent(OddLength - 5));
        Assert.All(StoragePool.RentZeroed(7), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void AnEmptyClassIsServedByAnIdleArrayAtMostAnOctaveAbove()
    {
        // Lengths no other test uses: one array in a class, then requests a few classes and over an octave below it.
        const int Large = 7_300_001;
        float[] a = StoragePool.Rent(Large);
        StoragePool.Return(a);
        float[] tooSmall = StoragePool.Rent(Large / 2 - 500_000);      // more than an octave below: a new array
        Assert.NotSame(a, tooSmall);
        Assert.Same(a, StoragePool.Rent(Large * 3 / 4));              // a few classes below: the idle larger array
        StoragePool.Return(a);
        Assert.Same(a, StoragePool.Rent(Large - 1));                   // its own class still finds it
    }

    [Fact]
    public void ByteArraysArePooledApartFromFloatArrays()
    {
        const int Length = 5_100_007;
        byte[] codes = StoragePool.RentBytes(Length);
        Assert.True(codes.Length >= Length && codes.Length <= Length + Length / 8 + 1);
        long held = StoragePool.HeldBytes;
        StoragePool.ReturnBytes(codes);
        Assert.True(StoragePool.HeldBytes >= held + codes.Length || StoragePool.HeldBytes > held);
        Assert.Same(codes, StoragePool.RentBytes(Length - 3));
    }

    [Fact]
    public void ASizeClassNobodyAskedForIsTrimmed()
    {
        float[] a = StoragePool.Rent(OddLength + 3_000_000);
        StoragePool.Return(a);
        StoragePool.TrimUnused();                                    // nobody asked for this class since it was created
        Assert.NotSame(a, StoragePool.Rent(OddLength + 3_000_000));
    }

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
