using DeepSeekSharp.Tensors;
using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>The CPU implementation of <see cref="IBackend"/>: vectorised kernels, parallel over rows/heads.</summary>
public sealed class CpuBackend : IBackend
{
    public CpuBackend(int threads)
    {
        Threads = Math.Max(1, threads);
        Pool = new WorkerPool(Threads);
    }

    /// <summary>The default backend: DSS_THREADS if set, else one thread per core.</summary>
    public static CpuBackend Default { get; } = new(ThreadsFromEnvironment());

    public static int ThreadsFromEnvironment() =>
        int.TryParse(Environment.GetEnvironmentVariable("DSS_THREADS"), out int t) && t > 0 ? t : Environment.ProcessorCount;

    public string Name => "cpu";

    public int Threads { get; }

    /// <summary>The persistent workers every kernel of this backend shares.</summary>
    public WorkerPool Pool { get; }

    /// <inheritdoc/>
    /// <remarks>Pieces are claimed by the pool's threads one at a time; a kernel called inside a piece finds the pool
    /// busy and runs inline, so each piece's GEMMs run whole on one core instead of being split into slivers.</remarks>
    public void RunConcurrently(int count, Action<int> body) => Pool.Run(count, body);

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc) =>
        Sgemm.Multiply(Pool, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);

    public unsafe PackedMatrix PackGemmB(bool transB, ReadOnlySpan<float> b, int ldb, int n, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfLessThan(ldb, Math.Max(1, transB ? k : n));
        long needed = n == 0 || k == 0 ? 0 : transB ? (long)(n - 1) * ldb + k : (long)(k - 1) * ldb + n;
        if (needed > b.Length) throw new ArgumentException($"B needs {needed} floats ({(transB ? n : k)}x{(transB ? k : n)}, ldb {ldb}) but has {b.Length}.", nameof(b));
        float[] data = StoragePool.Rent(Math.Max(1, SgemmPrepacked.PackedBLength(n, k)));
        if (n > 0 && k > 0)
            fixed (float* pb = b) fixed (float* pd = data)
                SgemmBlocked.PackAllB(Pool, transB, pb, ldb, n, k, pd);
        return new PackedMatrix(n, k, data);
    }

    public unsafe void GemmPackedB(bool transA, int m, float alpha, ReadOnlySpan<float> a, int lda, PackedMatrix b, float beta, Span<float> c, int ldc)
    {
        int n = b.N, k = b.K;
        if (b.Layout != PackedLayout.BlisPanels) throw new ArgumentException($"a matrix packed by another backend ({b.Layout})", nameof(b));
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfLessThan(lda, Math.Max(1, transA ? m : k));
        ArgumentOutOfRangeException.ThrowIfLessThan(ldc, Math.Max(1, n));
        if (m == 0 || n == 0) return;
        long needA = k == 0 ? 0 : transA ? (long)(k - 1) * lda + m : (long)(m - 1) * lda + k;
        if (needA > a.Length) throw new ArgumentException($"A needs {needA} floats but has {a.Length}.", nameof(a));
        if ((long)(m - 1) * ldc + n > c.Length) throw new ArgumentException($"C needs {(long)(m - 1) * ldc + n} floats but has {c.Length}.", nameof(c));
        fixed (float* pa = a) fixed (float* pb = b.Data) fixed (float* pc = c)
            BlisSgemm.MultiplyPackedB(Pool, transA, m, n, k, alpha, pa, lda, pb, beta, pc, ldc);
    }

    public unsafe void GroupedGemm(bool transA, bool transB, float alpha, float beta, int lda, int ldb, int ldc,
        ReadOnlySpan<GemmGroup> groups, ReadOnlySpan<int> bRows)
    {
        if (groups.IsEmpty) return;
        foreach (var g in groups) CheckGroup(transA, transB, lda, ldb, ldc, g, bRows);
        // Each expert's weights are an array of their own: pin them all for the call (the workers read raw pointers).
        var handles = ArrayPool<System.Runtime.InteropServices.GCHandle>.Shared.Rent(3 * groups.Length);
        var native = ArrayPool<SgemmGroup>.Shared.Rent(groups.Length);
        int pinned = 0;
        try
        {
            fixed (int* rows = bRows)
            {
                for (int i = 0; i < groups.Length; i++)
                {
                    var g = groups[i];
                    float* a = Pin(g.A, handles, ref pinned), b = Pin(g.B, handles, ref pinned), c = Pin(g.C, handles, ref pinned);
                    native[i] = new SgemmGroup(g.M, g.N, g.K, a + g.AOffset, lda, b + g.BOffset, ldb, c + g.COffset, ldc,
                        g.BRowsOffset >= 0 ? rows + g.BRowsOffset : null);
                }
                Sgemm.MultiplyGrouped(Pool, transA, transB, alpha, beta, native.AsSpan(0, groups.Length));
            }
        }
        finally
        {
            for (int i = 0; i < pinned; i++) handles[i].Free();
            ArrayPool<System.Runtime.InteropServices.GCHandle>.Shared.Return(handles, clearArray: true);
            ArrayPool<SgemmGroup>.Shared.Return(native);
        }
    }

    private static unsafe float* Pin(float[] array, System.Runtime.InteropServices.GCHandle[] handles, ref int pinned)
    {
        var handle = System.Runtime.InteropServices.GCHandle.Alloc(array, System.Runtime.InteropServices.GCHandleType.Pinned);
        handles[pinned++] = handle;
        return (float*)handle.AddrOfPinnedObject();
    }

    private static unsafe byte* Pin(byte[] array, System.Runtime.InteropServices.GCHandle[] handles, ref int pinned)
    {
        var handle = System.Runtime.InteropServices.GCHandle.Alloc(array, System.Runtime.InteropServices.GCHandleType.Pinned);
        handles[pinned++] = handle;
        return (byte*)handle.AddrOfPinnedObject();
    }

    /// <summary>Bounds of one group's operands (the kernels read raw pointers, so every index is checked here).</summary>
    private static void CheckGroup(bool transA, bool transB, int lda, int ldb, int ldc, in GemmGroup g, ReadOnlySpan<int> bRows)
    {
        if (g.M < 0 || g.N < 0 || g.K < 0) throw new ArgumentException($"grouped GEMM: negative shape {g.M}x{g.N}x{g.K}");
        if (lda < Math.Max(1, transA ? g.M : g.K) || ldb < Math.Max(1, transB ? g.K : g.N) || ldc < Math.Max(1, g.N))
            throw new ArgumentException($"grouped GEMM: leading dimensions {lda}/{ldb}/{ldc} too small for {g.M}x{g.N}x{g.K}");
        if (g.M == 0 || g.N == 0) return;
        CheckSpan(g.C, g.COffset, g.M, g.N, ldc, "C");
        if (g.K == 0) return;
        if (transA) CheckSpan(g.A, g.AOffset, g.K, g.M, lda, "A"); else CheckSpan(g.A, g.AOffset, g.M, g.K, lda, "A");
        if (g.BRowsOffset < 0)
        {
            if (transB) CheckSpan(g.B, g.BOffset, g.N, g.K, ldb, "B"); else CheckSpan(g.B, g.BOffset, g.K, g.N, ldb, "B");
            return;
        }
        if (transB) throw new ArgumentException("grouped GEMM: gathered B rows need op(B) not transposed");
        if (g.BRowsOffset + (long)g.K > bRows.Length) throw new ArgumentException($"grouped GEMM: rows [{g.BRowsOffset}, +{g.K}) outside {bRows.Length}");
        long rowsInB = g.B.Length - (long)g.BOffset < g.N ? 0 : (g.B.Length - (long)g.BOffset - g.N) / ldb + 1;
        foreach (int r in bRows.Slice(g.BRowsOffset, g.K))
            if ((uint)r >= (ulong)rowsInB) throw new ArgumentOutOfRangeException(nameof(bRows), $"grouped GEMM: B row {r} outside [0, {rowsInB})");
    }

    private static void CheckSpan(float[] array, int offset, int rows, int cols, int ld, string name)
    {
        if (offset < 0 || offset + (long)(rows - 1) * ld + cols > array.Length)
            throw new ArgumentException($"grouped GEMM: {name} needs {(long)(rows - 1) * ld + cols} floats from {offset} but has {array.Length}");
    }

    public void GemmCompressedWeight(int m, ReadOnlySpan<float> a, DeepSeekSharp.Tensors.CompressedWeight w, Span<float> c) =>
        Sgemm.MultiplyCompressedWeight(Pool, m, a, w.Cols, w, c, w.Rows);

    public unsafe void RmsNormForward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, int d, Span<float> y, Span<float> invRms)
    {
        int rows = x.Length / d;
        fixed (float* px = x) fixed (float* pw = w) fixed (float* py = y) fixed (float* pr = invRms)
        {
            nint ix = (nint)px, iw = (nint)pw, iy = (nint)py, ir = (nint)pr;
            int xl = x.Length;
            CpuParallel.ForRanges(rows, 64, Pool, (s, e) => NormKernels.RmsNormRows(
                new ReadOnlySpan<float>((float*)ix, xl), new ReadOnlySpan<float>((float*)iw, d), eps, d,
                new Span<float>((float*)iy, xl), new Span<float>((float*)ir, rows), s, e));
        }
    }

    public unsafe void RmsNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> invRms, ReadOnlySpan<float> dy, int d,
        Span<float> dx, Span<float> dw)
    {
        int rows = x.Length / d;
        int xl = x.Length;
        if ((!dx.IsEmpty && dx.Length != xl) || (!dw.IsEmpty && dw.Length != d) || dy.Length != xl || invRms.Length < rows)
            throw new ArgumentException($"rms_norm backward: gradients must match their tensors (x {xl}, dx {dx.Length}, dy {dy.Length}, w {d}, dw {dw.Length})");
        fixed (float* px = x) fixed (float* pw = w) fixed (float* pr = invRms) fixed (float* pdy = dy) fixed (float* pdx = dx)
        {
            nint ix = (nint)px, iw = (nint)pw, ir = (nint)pr, idy = (nint)pdy, idx = (nint)pdx;
            if (!dx.IsEmpty)
                CpuParallel.ForRanges(rows, 64, Pool, (s, e) =>
                {
                    float[] scratch = ArrayPool<float>.Shared.Rent(d);
                    NormKernels.RmsNormBackwardRowsDx(new ReadOnlySpan<float>((float*)ix, xl), new ReadOnlySpan<float>((float*)iw, d),
                        new ReadOnlySpan<float>((float*)ir, rows), new ReadOnlySpan<float>((float*)idy, xl), d,
                        new Span<float>((float*)idx, xl), scratch.AsSpan(0, d), s, e);
                    ArrayPool<float>.Shared.Return(scratch);
                });
        }
        if (!dw.IsEmpty)
        {
            float[] scratch = ArrayPool<float>.Shared.Rent(d);
            NormKernels.RmsNormBackwardRowsDw(x, invRms, dy, d, dw, scratch.AsSpan(0, d), 0, rows);
            ArrayPool<float>.Shared.Return(scratch);
        }
    }

    public unsafe void QuantizeE4M3(ReadOnlySpan<float> x, int rows, int cols, int tileRows, int tileCols, Span<byte> codes, Span<float> scales,
        Span<float> dequantized)
    {
        int bands = (rows + tileRows - 1) / tileRows, n = rows * cols, sl = scales.Length;
        bool wantCodes = !codes.IsEmpty, wantValues = !dequantized.IsEmpty;
        if (x.Length < n || (wantCodes && codes.Length < n) || (wantValues && dequantized.Length < n)) throw new ArgumentException("buffers shorter than rows × cols");
        fixed (float* px = x) fixed (byte* pc = codes) fixed (float* ps = scales) fixed (float* pd = dequantized)
        {
            nint ix = (nint)px, ic = (nint)pc, isc = (nint)ps, id = (nint)pd;
            CpuParallel.ForRanges(bands, Math.Max(1, 16384 / Math.Max(1, tileRows * cols)), Pool, (s, e) => DeepSeekSharp.Fp8.Fp8Quantizer.QuantizeBands(
                new ReadOnlySpan<float>((float*)ix, n), rows, cols, tileRows, tileCols, s, e,
                wantCodes ? new Span<byte>((byte*)ic, n) : [], new Span<float>((float*)isc, sl), wantValues ? new Span<float>((float*)id, n) : []));
        }
    }

    public unsafe void GemmE4M3(bool transA, bool transB, int m, int n, int k, DeepSeekSharp.Fp8.Fp8Tensor a, DeepSeekSharp.Fp8.Fp8Tensor b, float beta, Span<float> c, int ldc)
    {
        E4M3Shapes.Check(transA, transB, m, n, k, a, b, c.Length, ldc);
        if (m == 0 || n == 0) return;
        fixed (byte* ac = a.Codes) fixed (float* asc = a.Scales) fixed (byte* bc = b.Codes) fixed (float* bsc = b.Scales) fixed (float* pc = c)
        {
            if (k == 0)
            {
                for (int i = 0; i < m; i++)
                {
                    var row = new Span<float>(pc + (nint)i * ldc, n);
                    if (beta == 0f) row.Clear(); else System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
                }
                return;
            }
            var aOperand = new E4M3Operand(ac, asc, a.Rows, a.Cols, a.TileRows, a.TileCols);
            var bOperand = new E4M3Operand(bc, bsc, b.Rows, b.Cols, b.TileRows, b.TileCols);
            SgemmBlocked.MultiplyE4M3(Pool, BlisSgemmKernel.Best, transA, transB, m, n, k, aOperand, bOperand, beta, pc, ldc);
        }
    }

    public unsafe void GroupedGemmE4M3(bool transB, ReadOnlySpan<E4M3GemmGroup> groups, int ldc)
    {
        if (groups.IsEmpty) return;
        foreach (var g in groups) E4M3Shapes.CheckGroup(transB, g, ldc);
        // Codes, scales and outputs are separate arrays (the experts' weights each have their own): pinned for the call.
        var handles = ArrayPool<System.Runtime.InteropServices.GCHandle>.Shared.Rent(5 * groups.Length);
        var native = ArrayPool<E4M3SgemmGroup>.Shared.Rent(groups.Length);
        int pinned = 0;
        try
        {
            for (int i = 0; i < groups.Length; i++)
            {
                var g = groups[i];
                var (a, b) = (g.A, g.B);
                // A's rows from ARow on: the operand starts at that row's codes and its tile row's scales.
                var aOperand = new E4M3Operand(Pin(a.Codes, handles, ref pinned) + (nint)g.ARow * a.Cols,
                    Pin(a.Scales, handles, ref pinned) + (nint)(g.ARow / a.TileRows) * a.ScaleCols, g.M, a.Cols, a.TileRows, a.TileCols);
                var bOperand = new E4M3Operand(Pin(b.Codes, handles, ref pinned), Pin(b.Scales, handles, ref pinned), b.Rows, b.Cols,
                    b.TileRows, b.TileCols);
                native[i] = new E4M3SgemmGroup(g.M, g.N, g.K, aOperand, bOperand, Pin(g.C, handles, ref pinned) + g.COffset, ldc);
            }
            BlisSgemm.MultiplyGroupedE4M3(Pool, BlisSgemmKernel.Best, transB, native.AsSpan(0, groups.Length));
        }
        finally
        {
            for (int i = 0; i < pinned; i++) handles[i].Free();
            ArrayPool<System.Runtime.InteropServices.GCHandle>.Shared.Return(handles, clearArray: true);
            ArrayPool<E4M3SgemmGroup>.Shared.Return(native);
        }
    }

    public unsafe void QuantizeE5M6(ReadOnlySpan<float> x, int rows, int cols, Span<ushort> codes, Span<float> scales)
    {
        int n = rows * cols, sl = scales.Length;
        if (x.Length < n || codes.Length < n || sl < rows * ((cols + 127) / 128)) throw new ArgumentException("buffers shorter than the E5M6 tiling");
        fixed (float* px = x) fixed (ushort* pc = codes) fixed (float* ps = scales)
        {
            nint ix = (nint)px, ic = (nint)pc, isc = (nint)ps;
            CpuParallel.ForRanges(rows, Math.Max(1, 16384 / Math.Max(1, cols)), Pool, (s, e) => DeepSeekSharp.Fp8.E5M6Tiles.QuantizeRows(
                new ReadOnlySpan<float>((float*)ix, n), cols, new Span<ushort>((ushort*)ic, n), new Span<float>((float*)isc, sl), s, e));
        }
    }

    public unsafe void DequantizeE5M6(ReadOnlySpan<ushort> codes, int rows, int cols, ReadOnlySpan<float> scales, Span<float> values)
    {
        int n = rows * cols, sl = scales.Length;
        if (codes.Length < n || values.Length < n) throw new ArgumentException("buffers shorter than rows × cols");
        fixed (ushort* pc = codes) fixed (float* ps = scales) fixed (float* pv = values)
        {
            nint ic = (nint)pc, isc = (nint)ps, iv = (nint)pv;
            CpuParallel.ForRanges(rows, Math.Max(1, 16384 / Math.Max(1, cols)), Pool, (s, e) => DeepSeekSharp.Fp8.E5M6Tiles.DequantizeRows(
                new ReadOnlySpan<ushort>((ushort*)ic, n), cols, new ReadOnlySpan<float>((float*)isc, sl), new Span<float>((float*)iv, n), s, e));
        }
    }

    public unsafe void DequantizeE4M3(ReadOnlySpan<byte> codes, int rows, int cols, int tileRows, int tileCols, ReadOnlySpan<float> scales, Span<float> values)
    {
        int n = rows * cols, sl = scales.Length;
        if (codes.Length < n || values.Length < n) throw new ArgumentException("buffers shorter than rows × cols");
        fixed (byte* pc = codes) fixed (float* ps = scales) fixed (float* pv = values)
        {
            nint ic = (nint)pc, isc = (nint)ps, iv = (nint)pv;
            CpuParallel.ForRanges(rows, Math.Max(1, 16384 / Math.Max(1, cols)), Pool, (s, e) => DeepSeekSharp.Fp8.Fp8Quantizer.DequantizeRows(
                new ReadOnlySpan<byte>((byte*)ic, n), rows, cols, tileRows, tileCols, new ReadOnlySpan<float>((float*)isc, sl),
                new Span<float>((float*)iv, n), s, e));
        }
    }

    public unsafe void SiluMulForward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        int n = a.Length;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* py = y)
        {
            nint ia = (nint)pa, ib = (nint)pb, iy = (nint)py;
            CpuParallel.ForRanges(n, 16384, Pool, (s, e) => ActivationKernels.SiluMul(
                new ReadOnlySpan<float>((float*)ia + s, e - s), new ReadOnlySpan<float>((float*)ib + s, e - s), new Span<float>((float*)iy + s, e - s)));
        }
    }

    public unsafe void SiluMulBackward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> dy, Span<float> da, Span<float> db,
        bool accumulate = true)
    {
        int n = a.Length;
        bool wantA = !da.IsEmpty, wantB = !db.IsEmpty;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pdy = dy) fixed (float* pda = da) fixed (float* pdb = db)
        {
            nint ia = (nint)pa, ib = (nint)pb, idy = (nint)pdy, ida = (nint)pda, idb = (nint)pdb;
            CpuParallel.ForRanges(n, 16384, Pool, (s, e) => ActivationKernels.SiluMulBackward(
                new ReadOnlySpan<float>((float*)ia + s, e - s), new ReadOnlySpan<float>((float*)ib + s, e - s),
                new ReadOnlySpan<float>((float*)idy + s, e - s),
                wantA ? new Span<float>((float*)ida + s, e - s) : [], wantB ? new Span<float>((float*)idb + s, e - s) : [], accumulate));
        }
    }

    public void Rope(ReadOnlySpan<float> x, Span<float> y, int rows, int groups, int stride, int offset, int ropeDim,
        ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse) =>
        RopeKernels.Apply(x, y, groups, stride, offset, ropeDim, positions, cos, sin, inverse, 0, rows);

    public void MlaAttentionForward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> logSumExp) => MlaAttentionKernels.Forward(s, q, kvb, kpe, o, logSumExp, Pool);

    public void MlaAttentionBackward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpe) =>
        MlaAttentionKernels.Backward(s, q, kvb, kpe, logSumExp, dO, dq, dkvb, dkpe, Pool);

    public double CrossEntropyForward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp) =>
        CrossEntropySweep(logits, targets, v, rowLogSumExp, 0f, Span<float>.Empty);

    public double CrossEntropyForwardBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp,
        float scale, Span<float> dlogits) => CrossEntropySweep(logits, targets, v, rowLogSumExp, scale, dlogits);

    private unsafe double CrossEntropySweep(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp,
        float scale, Span<float> dlogits)
    {
        int rows = targets.Length, dl = dlogits.Length;
        double total = 0;
        object gate = new();
        fixed (float* pl = logits) fixed (int* pt = targets) fixed (float* pr = rowLogSumExp) fixed (float* pd = dlogits)
        {
            nint il = (nint)pl, it = (nint)pt, ir = (nint)pr, id = (nint)pd;
            int ll = logits.Length;
            CpuParallel.ForRanges(rows, 8, Pool, (s, e) =>
            {
                double part = CrossEntropyKernels.ForwardRows(new ReadOnlySpan<float>((float*)il, ll), new ReadOnlySpan<int>((int*)it, rows), v,
                    new Span<float>((float*)ir, rows), scale, new Span<float>((float*)id, dl), s, e);
                lock (gate) total += part;
            });
        }
        return total;
    }

    public unsafe void CrossEntropyBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, ReadOnlySpan<float> rowLogSumExp,
        float scale, Span<float> dlogits)
    {
        int rows = targets.Length;
        fixed (float* pl = logits) fixed (int* pt = targets) fixed (float* pr = rowLogSumExp) fixed (float* pd = dlogits)
        {
            nint il = (nint)pl, it = (nint)pt, ir = (nint)pr, id = (nint)pd;
            int ll = logits.Length;
            CpuParallel.ForRanges(rows, 8, Pool, (s, e) => CrossEntropyKernels.BackwardRows(
                new ReadOnlySpan<float>((float*)il, ll), new ReadOnlySpan<int>((int*)it, rows), v,
                new ReadOnlySpan<float>((float*)ir, rows), scale, new Span<float>((float*)id, ll), s, e));
        }
    }
}
