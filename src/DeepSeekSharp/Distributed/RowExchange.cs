using DeepSeekSharp.Fp8;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Distributed;

/// <summary>What token rows travel as in an expert-parallel exchange (<c>ep_dispatch</c>, <c>ep_combine</c>).</summary>
public enum WireFormat
{
    /// <summary>The fp32 values themselves: the receiver computes exactly what one process computes.</summary>
    Fp32,

    /// <summary>BF16 (round to nearest even), widened back on arrival: half the bytes.</summary>
    Bf16,

    /// <summary>E4M3 codes with one fp32 scale per 1×128 tile of a row (DeepSeek-V3's dispatch recipe), dequantised on arrival.</summary>
    Fp8,
}

/// <summary>
/// Moves rows of <c>hidden</c> floats between the ranks of a group with one all-to-all-v per payload: block d of the
/// send buffer (<c>sendRows[d]</c> consecutive rows) goes to rank d, and block s of the receive buffer comes from
/// rank s. The rows travel in a <see cref="WireFormat"/> and arrive as fp32. A row's own block (to this rank) is
/// encoded and decoded too, so every row is rounded alike wherever its expert lives.
/// </summary>
public static class RowExchange
{
    public static WireFormat Parse(string name, string key) => name switch
    {
        "fp32" => WireFormat.Fp32,
        "bf16" => WireFormat.Bf16,
        "fp8" => WireFormat.Fp8,
        _ => throw new DeepSeekSharpException($"{key}: unknown format '{name}' (fp32, bf16 or fp8)"),
    };

    /// <summary>Bytes one row of <paramref name="hidden"/> values takes on the wire.</summary>
    public static long RowBytes(WireFormat format, int hidden) => format switch
    {
        WireFormat.Fp32 => 4L * hidden,
        WireFormat.Bf16 => 2L * hidden,
        _ => hidden + 4L * ((hidden + 127) / 128),
    };

    /// <param name="group">every rank calls it with its own buffers</param>
    /// <param name="send">[Σ sendRows, hidden]</param>
    /// <param name="sendRows">rows for each rank of the group</param>
    /// <param name="receive">[Σ receiveRows, hidden]</param>
    /// <param name="receiveRows">rows from each rank (what each sends here)</param>
    /// <returns>the bytes this rank sent to the other ranks</returns>
    public static long Exchange(ICommunicator group, WireFormat format, ReadOnlySpan<float> send, ReadOnlySpan<int> sendRows,
        Span<float> receive, ReadOnlySpan<int> receiveRows, int hidden)
    {
        int n = group.Size;
        if (sendRows.Length != n || receiveRows.Length != n) throw new ArgumentException($"row counts for {sendRows.Length} and {receiveRows.Length} ranks in a group of {n}");
        int sent = Sum(sendRows), received = Sum(receiveRows);
        if (send.Length < (long)sent * hidden || receive.Length < (long)received * hidden)
            throw new ArgumentException($"{sent} and {received} rows of {hidden} do not fit buffers of {send.Length} and {receive.Length}");
        long remoteRows = sent - sendRows[group.Rank];
        switch (format)
        {
            case WireFormat.Fp32:
                Move(group, send[..(sent * hidden)], sendRows, receive[..(received * hidden)], receiveRows, hidden);
                break;
            case WireFormat.Bf16:
            {
                ushort[] out16 = new ushort[sent * hidden], in16 = new ushort[received * hidden];
                NumericFormats.FloatToBf16(send[..(sent * hidden)], out16);
                Move<ushort>(group, out16, sendRows, in16, receiveRows, hidden);
                NumericFormats.Bf16ToFloat(in16, receive[..(received * hidden)]);
                break;
            }
            default:
            {
                int tiles = (hidden + 127) / 128;
                var q = Fp8Quantizer.QuantizeRowTiles(send[..(sent * hidden)], sent, hidden);
                var codes = new byte[received * hidden];
                var scales = new float[received * tiles];
                Move<byte>(group, q.Codes, sendRows, codes, receiveRows, hidden);
                Move<float>(group, q.Scales, sendRows, scales, receiveRows, tiles);
                Fp8Quantizer.Dequantize(new Fp8Tensor(received, hidden, 1, 128, codes, scales), receive[..(received * hidden)]);
                break;
            }
        }
        return remoteRows * RowBytes(format, hidden);
    }

    private static void Move<T>(ICommunicator group, ReadOnlySpan<T> send, ReadOnlySpan<int> sendRows, Span<T> receive, ReadOnlySpan<int> receiveRows, int width)
        where T : unmanaged
    {
        int n = group.Size;
        Span<int> sc = stackalloc int[n], so = stackalloc int[n], rc = stackalloc int[n], ro = stackalloc int[n];
        for (int d = 0, s = 0, r = 0; d < n; d++)
        {
            (sc[d], so[d], rc[d], ro[d]) = (sendRows[d] * width, s, receiveRows[d] * width, r);
            s += sc[d];
            r += rc[d];
        }
        group.AllToAllV(send, sc, so, receive, rc, ro);
    }

    private static int Sum(ReadOnlySpan<int> counts)
    {
        int total = 0;
        foreach (int c in counts) total = checked(total + c);
        return total;
    }
}
