using System.Buffers.Binary;
using System.Text;
using DeepSeekSharp.IO.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.IO;

/// <summary>
/// Thousands of mutated safetensors files: each must either load consistently or fail with a
/// <see cref="DeepSeekSharpException"/> — never another exception, a hang or a huge allocation.
/// </summary>
public class SafeTensorsFuzzTests
{
    private static byte[] ValidFile(Random rng)
    {
        string path = Path.Combine(Path.GetTempPath(), $"fuzz-seed-{Guid.NewGuid():N}.safetensors");
        var tensors = new List<NamedTensor>();
        for (int i = 0; i < rng.Next(1, 4); i++)
        {
            int[] shape = [rng.Next(0, 5), rng.Next(1, 6)];
            var data = new float[shape[0] * shape[1]];
            for (int j = 0; j < data.Length; j++) data[j] = (float)rng.NextDouble();
            tensors.Add(new NamedTensor($"t{i}.weight", shape, data));
        }
        SafeTensorsWriter.Write(path, tensors, rng.Next(2) == 0 ? DType.F32 : DType.BF16, new Dictionary<string, string> { ["format"] = "pt" });
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    private static readonly string[] HostileHeaders =
    [
        "{}", "[]", "null", "{\"a\":1}", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,9223372036854775807]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"__metadata__\":{\"k\":5}}", "{\"__metadata__\":[1]}",
        new string('[', 5000) + new string(']', 5000),
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
    ];

    [Fact]
    public void MutatedFilesLoadConsistentlyOrFailCleanly()
    {
        var rng = new Random(20261122);
        string path = Path.Combine(Path.GetTempPath(), $"fuzz-{Guid.NewGuid():N}.safetensors");
        int loaded = 0, rejected = 0;
        try
        {
            for (int iter = 0; iter < 3000; iter++)
            {
                byte[] bytes = ValidFile(rng);
                bytes = Mutate(bytes, rng);
                File.WriteAllBytes(path, bytes);
                try
                {
                    using var r = SafeTensorsReader.Open(path);
                    foreach (var e in r.Tensors)
                    {
                        Assert.Equal(e.ElementCount * NumericFormats.SizeOf(e.DType), e.ByteLength);
                        if (e.DType is DType.F32 or DType.BF16 or DType.F16 or DType.F8E4M3 or DType.F8E5M2 or DType.F64)
                            Assert.Equal(e.ElementCount, r.ReadFloat32(e.Name).Length);
                        else Assert.Equal(e.ByteLength, r.GetBytes(e).Length);
                    }
                    loaded++;
                }
                catch (DeepSeekSharpException e)
                {
                    Assert.DoesNotContain('\n', e.Message);
                    Assert.Contains(Path.GetFileName(path), e.Message);
                    rejected++;
                }
            }
        }
        finally { File.Delete(path); }
        Assert.True(loaded > 100 && rejected > 1000, $"loaded {loaded}, rejected {rejected}: mutations should produce both outcomes");
    }

    [Fact]
    public void HostileHeadersAreRejectedWithOneLine()
    {
        string path = Path.Combine(Path.GetTempPath(), $"hostile-{Guid.NewGuid():N}.safetensors");
        try
        {
            foreach (string header in HostileHeaders)
            {
                byte[] json = Encoding.UTF8.GetBytes(header);
                var bytes = new byte[8 + json.Length + 4];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
                json.CopyTo(bytes, 8);
                File.WriteAllBytes(path, bytes);
                try
                {
                    using var r = SafeTensorsReader.Open(path);
                    // The few headers that are legal must describe exactly the 4 data bytes present.
                    Assert.All(r.Tensors, e => Assert.True(e.Offset + e.ByteLength <= 4));
                }
                catch (DeepSeekSharpException e)
                {
                    Assert.DoesNotContain('\n', e.Message);
                }
            }
            foreach (ulong n in new[] { 0UL, 7UL, ulong.MaxValue, 1UL << 40 })
            {
                var bytes = new byte[16];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, n);
                File.WriteAllBytes(path, bytes);
                Assert.ThrowsAny<DeepSeekSharpException>(() => SafeTensorsReader.Open(path).Dispose());
            }
            File.WriteAllBytes(path, []);
            Assert.ThrowsAny<DeepSeekSharpException>(() => SafeTensorsReader.Open(path).Dispose());
        }
        finally { File.Delete(path); }
    }

    private static byte[] Mutate(byte[] bytes, Random rng)
    {
        int headerLen = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        switch (rng.Next(8))
        {
            case 0: // flip bytes in the header
                for (int i = 0; i < rng.Next(1, 4); i++) bytes[8 + rng.Next(headerLen)] ^= (byte)(1 << rng.Next(8));
                return bytes;
            case 1: // truncate anywhere
                return bytes[..rng.Next(bytes.Length)];
            case 2: // corrupt the length prefix
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)rng.NextInt64(0, long.MaxValue) >> rng.Next(64));
                return bytes;
            case 3: // replace a digit in the header (shapes and offsets)
            {
                var h = Encoding.UTF8.GetString(bytes, 8, headerLen).ToCharArray();
                var digits = Enumerable.Range(0, h.Length).Where(i => char.IsDigit(h[i])).ToList();
                if (digits.Count > 0) h[digits[rng.Next(digits.Count)]] = (char)('0' + rng.Next(10));
                Encoding.UTF8.GetBytes(h).CopyTo(bytes, 8);
                return bytes;
            }
            case 4: // change a dtype
            {
                string h = Encoding.UTF8.GetString(bytes, 8, headerLen);
                string[] types = ["F32", "BF16", "F16", "I64", "U8", "F8_E4M3", "BOOL", "XYZ", "F64"];
                string swapped = h.Replace(h.Contains("\"F32\"") ? "\"F32\"" : "\"BF16\"", $"\"{types[rng.Next(types.Length)]}\"");
                var hb = Encoding.UTF8.GetBytes(swapped);
                var result = new byte[8 + hb.Length + (bytes.Length - 8 - headerLen)];
                BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)hb.Length);
                hb.CopyTo(result, 8);
                bytes.AsSpan(8 + headerLen).CopyTo(result.AsSpan(8 + hb.Length));
                return result;
            }
            case 5: // invalid UTF-8 in the header
                bytes[8 + rng.Next(headerLen)] = 0xFF;
                return bytes;
            case 6: // random garbage data after a valid header (still loads)
                for (int i = 8 + headerLen; i < bytes.Length; i++) bytes[i] = (byte)rng.Next(256);
                return bytes;
            default: // append bytes (still loads: trailing data is allowed)
                return bytes.Concat(new byte[rng.Next(1, 64)]).ToArray();
        }
    }
}
