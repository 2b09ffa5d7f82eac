using System.Runtime.CompilerServices;
using DeepSeekSharp.IO;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.IO;

/// <summary>
/// A safetensors tensor handed out as mapped memory: its bytes are the file's, at any (odd) offset, and it stays
/// readable after the reader is disposed and collected, because the memory keeps the mapping alive.
/// </summary>
public sealed class MappedFileTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (ReadOnlyMemory<byte> Mapped, byte[] Copied) MapThenDispose(string path, string name)
    {
        using var reader = SafeTensorsReader.Open(path);
        var entry = reader.Get(name);
        return (reader.MapBytes(entry), reader.GetBytes(entry).ToArray());
    }

    [Fact]
    public void MappedTensorBytesEqualTheFilesAndOutliveTheReader()
    {
        string path = Path.Combine(_dir, "codes.safetensors");
        var rng = new Random(5);
        // A 3-byte tensor first puts the next one at an odd offset: byte data needs no alignment.
        byte[] pad = [1, 2, 3], codes = new byte[300 * 257];
        rng.NextBytes(codes);
        SafeTensorsWriter.WriteRaw(path, [new RawTensor("pad", DType.U8, [3], pad), new RawTensor("w", DType.F8E4M3, [300, 257], codes)]);

        var (mapped, copied) = MapThenDispose(path, "w");
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.True(MappedFile.IsMapped(mapped));
        Assert.False(MappedFile.IsMapped(copied));
        Assert.Equal(codes, copied);
        Assert.True(mapped.Span.SequenceEqual(codes));
        using (var pin = mapped.Pin()) unsafe { Assert.Equal(codes[0], *(byte*)pin.Pointer); }

        var weight = CompressedWeight.FromFp8Codes(300, 257, mapped, new float[3 * 3]);
        Assert.True(weight.IsMapped);
        Assert.False(CompressedWeight.Compress(new float[300 * 257], 300, 257, WeightStorage.Fp8Block).IsMapped);
    }

    [Fact]
    public void ASliceOutsideTheFileIsRefused()
    {
        string path = Path.Combine(_dir, "small.safetensors");
        SafeTensorsWriter.WriteRaw(path, [new RawTensor("w", DType.U8, [4], new byte[4])]);
        using var file = new MappedFile(path, new FileInfo(path).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => file.Slice(file.Length - 2, 3));
        Assert.Equal(3, file.Slice(file.Length - 3, 3).Length);
    }
}
