using System.Runtime.InteropServices;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels.Cuda;

/// <summary>
/// <see cref="IBackend"/> on an NVIDIA GPU: every operation runs there (GEMMs through cuBLASLt, the rest as the
/// kernels of Sources/kernels.cu). Today tensors live in host memory and each call stages its operands through a
/// device arena (upload, launch, download); keeping tensors on the device across a whole step is the next step, and
/// nothing in the ops changes for it. Calls are serialised (one GPU stream); <see cref="RunConcurrently"/> runs its
/// pieces in order.
/// </summary>
public sealed unsafe class CudaBackend : IBackend, IDisposable
{
    private readonly IGpuRuntime _gpu;
    private readonly DeviceArena _arena;
    private readonly KernelArguments _args = new();
    private readonly object _gate = new();

    /// <param name="gpu">the device (a <see cref="CudaRuntime"/>, or an emulated one in tests)</param>
    /// <param name="gemmPrecision">the arithmetic of fp32 GEMMs: exact fp32 (default), TF32 tensor cores, or BF16 inputs</param>
    public CudaBackend(IGpuRuntime gpu, GemmPrecision gemmPrecision = GemmPrecision.Fp32)
    {
        _gpu = gpu;
        _arena = new DeviceArena(gpu);
        GemmPrecision = gemmPrecision;
    }

    public string Name => "cuda";

    public IGpuRuntime Gpu => _gpu;

    public GemmPrecision GemmPrecision { get; }

    public void RunConcurrently(int count, Action<int> body)
    {
        for (int i = 0; i < count; i++) body(i);
    }

    // ----- staging ---------------------------------------------------------------------------------------------

    private DevicePtr Up<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var p = _arena.Take((long)values.Length * sizeof(T));
        fixed (T* source = values) _gpu.Upload(p, source, (long)values.Length * sizeof(T));
        return p;
    }

    private DevicePtr Scratch<T>(long count) where T : unmanaged => _arena.Take(count * sizeof(T));

    private void Down<T>(DevicePtr source, Span<T> destination) where T : unmanaged
    {
        fixed (T* target = destination) _gpu.Download(target, source, (long)destination.Length * sizeof(T));
    }

    private KernelArguments Args() => _args.Reset();

    private void Launch(string kernel, Dim3 grid, int threads, int sharedBytes = 0) =>
        _gpu.Launch(kernel, grid, new Dim3((uint)threads), sharedBytes, _args.Pointers);

    // ----- GEMMs -----------------------------------------------------------------------------------------------

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        if (m == 0 || n == 0) return;
        long aCount = CublasLtGemm.Extent(transA ? k : m, transA ? m : k, lda), bCount = CublasLtGemm.Extent(transB ? n : k, transB ? k : n, ldb);
        long cCount = CublasLtGemm.Extent(m, n, ldc);
        if (a.Length < aCount || b.Length < bCount || c.Length < cCount)
            throw new ArgumentException($"GEMM {m}x{n}x{k}: operands shorter than their shapes (A {a.Length}/{aCount}, B {b.Length}/{bCount}, C {c.Length}/{cCount})");
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr da = Up(a[..(int)aCount]), db = Up(b[..(int)bCount]);
            // C goes up when it is read (beta ≠ 0) or has gaps between rows that must come back unchanged.
            DevicePtr dc = beta != 0 || ldc != n ? Up<float>(c[..(int)cCount]) : Scratch<float>(cCount);
            if (k == 0)
            {
                // An empty inner dimension only scales C (cuBLASLt rejects k = 0).
                for (int r = 0; r < m; r++)
                {
                    var row = dc.Offset((long)r * ldc * sizeof(float));
                    if (beta == 0) _gpu.Clear(row, (long)n * sizeof(float));
                    else Axpby(row, 0f, beta, n);
                }
            }
            else _gpu.Gemm(new GemmCall(GemmPrecision, transA, transB, m, n, k, alpha, da, lda, db, ldb, beta, dc, ldc));
            Down(dc, c[..(int)cCount]);
        }
    }

    private void Axpby(DevicePtr y, float scale, float beta, long count)
    {
        Args().Add(y).Add(scale).Add(y).Add(beta).Add(count);
        Launch("axpby_f32", LaunchPlan.ElementwiseGrid(count), LaunchPlan.ElementwiseThreads);
    }

    public void GroupedGemm(bool transA, bool transB, float alpha, float beta, int lda, int ldb, int ldc, ReadOnlySpan<GemmGroup> groups,
        ReadOnlySpan<int> bRows)
    {
        foreach (var g in groups)
        {
            if (g.M == 0 || g.N == 0) continue;
            ReadOnlySpan<float> a = g.A.AsSpan(g.AOffset);
            if (g.BRowsOffset < 0)
            {
                Gemm(transA, transB, g.M, g.N, g.K, alpha, a, lda, g.B.AsSpan(g.BOffset), ldb, beta, g.C.AsSpan(g.COffset), ldc);
                continue;
            }
            if (transB) throw new ArgumentException("grouped GEMM: gathered B rows need op(B) not transposed");
            // Gathered depth rows: op(B) row p is row bRows[BRowsOffset + p] of B.
            float[] gathered = StoragePool.Rent(Math.Max(1, g.K * g.N));
            try
            {
                for (int p = 0; p < g.K; p++)
                {
                    int row = bRows[g.BRowsOffset + p];
                    g.B.AsSpan(g.BOffset + row * ldb, g.N).CopyTo(gathered.AsSpan(p * g.N, g.N));
                }
                Gemm(transA, false, g.M, g.N, g.K, alpha, a, lda, gathered, g.N, beta, g.C.AsSpan(g.COffset), ldc);
            }
            finally { StoragePool.Return(gathered); }
        }
    }

    public PackedMatrix PackGemmB(bool transB, ReadOnlySpan<float> b, int ldb, int n, int k)
    {
        // The device GEMM reads any layout: "packing" is a row-major copy of op(B) [k, n].
        float[] data = StoragePool.Rent(Math.Max(1, n * k));
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++) data[p * n + j] = transB ? b[j * ldb + p] : b[p * ldb + j];
        return new PackedMatrix(n, k, data, PackedLayout.RowMajor);
    }

    public void GemmPackedB(bool transA, int m, float alpha, ReadOnlySpan<float> a, int lda, PackedMatrix b, float beta, Span<float> c, int ldc)
    {
        if (b.Layout != PackedLayout.RowMajor) throw new ArgumentException($"a matrix packed by another backend ({b.Layout})", nameof(b));
        Gemm(transA, false, m, b.N, b.K, alpha, a, lda, b.Data, b.N, beta, c, ldc);
    }

    public void GemmCompressedWeight(int m, ReadOnlySpan<float> a, CompressedWeight w, Span<float> c)
    {
        int rows = w.Rows, cols = w.Cols;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr weight = Scratch<float>((long)rows * cols);
            if (w.Storage == WeightStorage.Fp8Block)
            {
                DevicePtr codes = Up<byte>(w.Codes.Span), scales = Up<float>(w.Scales!);
                Args().Add(codes).Add(rows).Add(cols).Add(128).Add(128).Add(scales).Add(weight);
                Launch("dequantize_e4m3", LaunchPlan.ElementwiseGrid((long)rows * cols), LaunchPlan.ElementwiseThreads);
            }
            else if (w.Storage == WeightStorage.Bf16)
            {
                DevicePtr bits = Up<ushort>(w.Bits!);
                Args().Add(bits).Add(weight).Add((long)rows * cols);
                Launch("bf16_to_f32", LaunchPlan.ElementwiseGrid((long)rows * cols), LaunchPlan.ElementwiseThreads);
            }
            else throw new ArgumentException($"compressed weight storage {w.Storage}");
            DevicePtr x = Up(a[..(m * cols)]), y = Scratch<float>((long)m * rows);
            if (m > 0 && cols > 0) _gpu.Gemm(new GemmCall(GemmPrecision, false, true, m, rows, cols, 1f, x, cols, weight, cols, 0f, y, rows));
            else _gpu.Clear(y, (long)m * rows * sizeof(float));
            Down(y, c[..(m * rows)]);
        }
    }

    // ----- norms, activations, RoPE ---------------------------------------------------------------------------

    public void RmsNormForward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, int d, Span<float> y, Span<float> invRms)
    {
        int rows = x.Length / d;
        if (w.Length != d || y.Length != x.Length || invRms.Length < rows) throw new ArgumentException("rms_norm: buffers do not match x [rows, d]");
        if (rows == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr dx = Up(x), dw = Up(w), dy = Scratch<float>(x.Length), dr = Scratch<float>(rows);
            Args().Add(dx).Add(dw).Add(eps).Add(d).Add(dy).Add(dr);
            Launch("rmsnorm_forward", new Dim3((uint)rows), LaunchPlan.RowThreads(d));
            Down(dy, y);
            Down(dr, invRms[..rows]);
        }
    }

    public void RmsNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> invRms, ReadOnlySpan<float> dy, int d,
        Span<float> dx, Span<float> dw)
    {
        int rows = x.Length / d;
        if ((!dx.IsEmpty && dx.Length != x.Length) || (!dw.IsEmpty && dw.Length != d) || dy.Length != x.Length || invRms.Length < rows)
            throw new ArgumentException($"rms_norm backward: gradients must match their tensors (x {x.Length}, dx {dx.Length}, dy {dy.Length}, w {d}, dw {dw.Length})");
        if (rows == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr px = Up(x), pr = Up(invRms[..rows]), pdy = Up(dy);
            if (!dx.IsEmpty)
            {
                DevicePtr pw = Up(w), pdx = Up<float>(dx);
                Args().Add(px).Add(pw).Add(pr).Add(pdy).Add(d).Add(pdx);
                Launch("rmsnorm_backward_dx", new Dim3((uint)rows), LaunchPlan.RowThreads(d));
                Down(pdx, dx);
            }
            if (!dw.IsEmpty)
            {
                DevicePtr pdw = Up<float>(dw);
                Args().Add(px).Add(pr).Add(pdy).Add(d).Add(rows).Add(pdw);
                Launch("rmsnorm_backward_dw", new Dim3((uint)((d + 255) / 256)), 256);
                Down(pdw, dw);
            }
        }
    }

    public void SiluMulForward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        long n = a.Length;
        if (b.Length != n || y.Length != n) throw new ArgumentException("silu_mul: inputs and output differ in length");
        if (n == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pa = Up(a), pb = Up(b), py = Scratch<float>(n);
            Args().Add(pa).Add(pb).Add(py).Add(n);
            Launch("silu_mul_forward", LaunchPlan.ElementwiseGrid(n), LaunchPlan.ElementwiseThreads);
            Down(py, y);
        }
    }

    public void SiluMulBackward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> dy, Span<float> da, Span<float> db,
        bool accumulate = true)
    {
        long n = a.Length;
        if (b.Length != n || dy.Length != n || (!da.IsEmpty && da.Length != n) || (!db.IsEmpty && db.Length != n))
            throw new ArgumentException("silu_mul backward: buffers differ in length");
        if (n == 0 || (da.IsEmpty && db.IsEmpty)) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pa = Up(a), pb = Up(b), pdy = Up(dy);
            DevicePtr pda = da.IsEmpty ? default : accumulate ? Up<float>(da) : Scratch<float>(n);
            DevicePtr pdb = db.IsEmpty ? default : accumulate ? Up<float>(db) : Scratch<float>(n);
            Args().Add(pa).Add(pb).Add(pdy).Add(pda).Add(pdb).Add(n).Add(accumulate ? 1 : 0);
            Launch("silu_mul_backward", LaunchPlan.ElementwiseGrid(n), LaunchPlan.ElementwiseThreads);
            if (!da.IsEmpty) Down(pda, da);
            if (!db.IsEmpty) Down(pdb, db);
        }
    }

    public void Rope(ReadOnlySpan<float> x, Span<float> y, int rows, int groups, int stride, int offset, int ropeDim,
        ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse)
    {
        int rowLen = groups * stride;
        if (x.Length < (long)rows * rowLen || y.Length < (long)rows * rowLen || positions.Length < rows || ropeDim % 2 != 0 || offset + ropeDim > stride)
            throw new ArgumentException("rope: buffers or geometry do not match");
        if (rows == 0 || rowLen == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr px = Up(x[..(rows * rowLen)]), py = Scratch<float>((long)rows * rowLen), pp = Up(positions[..rows]), pc = Up(cos), ps = Up(sin);
            int threads = LaunchPlan.RowThreads(rowLen);
            foreach (var (first, count) in LaunchPlan.RowChunks(rows))
            {
                long shift = (long)first * rowLen * sizeof(float);
                Args().Add(px.Offset(shift)).Add(py.Offset(shift)).Add(groups).Add(stride).Add(offset).Add(ropeDim)
                    .Add(pp.Offset((long)first * sizeof(int))).Add(pc).Add(ps).Add(inverse ? 1 : 0);
                Launch("rope_rotate", new Dim3((uint)((rowLen + threads - 1) / threads), (uint)count), threads);
            }
            Down(py, y[..(rows * rowLen)]);
        }
    }

    // ----- attention -------------------------------------------------------------------------------------------

    public void MlaAttentionForward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> logSumExp)
    {
        // The kernels attend over whole sequences; packed documents go one call each.
        if (s.Documents is not null)
        {
            DocumentAttention.Forward(this, s, q, kvb, kpe, o, logSumExp);
            return;
        }
        long tokens = (long)s.Batch * s.SeqLen;
        if (tokens == 0) return;
        var shape = MlaKernelShape.From(s);
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pq = Up(q[..(int)(tokens * s.Heads * s.QDim)]), pkvb = Up(kvb[..(int)(tokens * s.Heads * s.KvbDim)]), pkpe = Up(kpe[..(int)(tokens * s.RopeDim)]);
            DevicePtr po = Scratch<float>(tokens * s.Heads * s.VDim), plse = Scratch<float>(tokens * s.Heads);
            Args().Add(pq).Add(pkvb).Add(pkpe).Add(shape).Add(po).Add(plse);
            Launch("mla_attention_forward", LaunchPlan.AttentionGrid(s), LaunchPlan.AttentionThreads, LaunchPlan.AttentionForwardShared(s));
            Down(po, o[..(int)(tokens * s.Heads * s.VDim)]);
            Down(plse, logSumExp[..(int)(tokens * s.Heads)]);
        }
    }

    public void MlaAttentionBackward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpe)
    {
        if (s.Documents is not null)
        {
            DocumentAttention.Backward(this, s, q, kvb, kpe, logSumExp, dO, dq, dkvb, dkpe);
            return;
        }
        long tokens = (long)s.Batch * s.SeqLen;
        if (tokens == 0) return;
        int nq = (int)(tokens * s.Heads * s.QDim), nkvb = (int)(tokens * s.Heads * s.KvbDim), nkpe = (int)(tokens * s.RopeDim);
        int no = (int)(tokens * s.Heads * s.VDim), nlse = (int)(tokens * s.Heads);
        var shape = MlaKernelShape.From(s);
        var grid = LaunchPlan.AttentionGrid(s);
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pq = Up(q[..nq]), pkvb = Up(kvb[..nkvb]), pkpe = Up(kpe[..nkpe]), plse = Up(logSumExp[..nlse]), pdo = Up(dO[..no]);
            DevicePtr pdq = Up<float>(dq[..nq]), pdkvb = Up<float>(dkvb[..nkvb]), pdkpe = Up<float>(dkpe[..nkpe]);
            DevicePtr delta = Scratch<float>(nlse), partial = Scratch<float>((long)s.Batch * s.Heads * s.SeqLen * s.RopeDim);
            Args().Add(pq).Add(pkvb).Add(pkpe).Add(plse).Add(pdo).Add(shape).Add(pdq).Add(delta);
            Launch("mla_attention_backward_query", grid, LaunchPlan.AttentionThreads, LaunchPlan.AttentionQueryShared(s));
            Args().Add(pq).Add(pkvb).Add(pkpe).Add(plse).Add(pdo).Add(delta).Add(shape).Add(pdkvb).Add(partial);
            Launch("mla_attention_backward_key", grid, LaunchPlan.AttentionThreads, LaunchPlan.AttentionKeyShared(s));
            Args().Add(partial).Add(s.Batch).Add(s.Heads).Add(s.SeqLen).Add(s.RopeDim).Add(pdkpe);
            Launch("mla_sum_heads", LaunchPlan.ElementwiseGrid(nkpe), LaunchPlan.ElementwiseThreads);
            Down(pdq, dq[..nq]);
            Down(pdkvb, dkvb[..nkvb]);
            Down(pdkpe, dkpe[..nkpe]);
        }
    }

    // ----- FP8 -------------------------------------------------------------------------------------------------

    public void QuantizeE4M3(ReadOnlySpan<float> x, int rows, int cols, int tileRows, int tileCols, Span<byte> codes, Span<float> scales,
        Span<float> dequantized)
    {
        int n = rows * cols, bands = (rows + tileRows - 1) / tileRows, across = (cols + tileCols - 1) / tileCols;
        bool wantCodes = !codes.IsEmpty, wantValues = !dequantized.IsEmpty;
        if (x.Length < n || (wantCodes && codes.Length < n) || (wantValues && dequantized.Length < n) || scales.Length < bands * across)
            throw new ArgumentException("buffers shorter than rows × cols");
        if (n == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr px = Up(x[..n]), pc = wantCodes ? Scratch<byte>(n) : default, ps = Scratch<float>(bands * across);
            DevicePtr pd = wantValues ? Scratch<float>(n) : default, bad = Scratch<int>(1);
            _gpu.Clear(bad, sizeof(int));
            foreach (var (first, count) in LaunchPlan.RowChunks(bands))
            {
                // A chunk of tile bands is the same kernel on the rows below the previous chunk's.
                long rowShift = (long)first * tileRows * cols;
                int chunkRows = Math.Min(rows - first * tileRows, count * tileRows);
                Args().Add(px.Offset(rowShift * sizeof(float))).Add(chunkRows).Add(cols).Add(tileRows).Add(tileCols)
                    .Add(wantCodes ? pc.Offset(rowShift) : default).Add(ps.Offset((long)first * across * sizeof(float)))
                    .Add(wantValues ? pd.Offset(rowShift * sizeof(float)) : default).Add(bad);
                Launch("quantize_e4m3", new Dim3((uint)across, (uint)count), LaunchPlan.TileThreads((long)tileRows * tileCols));
            }
            int badTile = 0;
            Down(bad, new Span<int>(ref badTile));
            if (badTile != 0) throw NonFinite(badTile - 1, across, tileRows, tileCols, rows, cols, "cannot be quantised to FP8");
            if (wantCodes) Down(pc, codes[..n]);
            Down(ps, scales[..(bands * across)]);
            if (wantValues) Down(pd, dequantized[..n]);
        }
    }

    private static DeepSeekSharpException NonFinite(int tile, int across, int tileRows, int tileCols, int rows, int cols, string what)
    {
        int bi = tile / across, bj = tile % across;
        int r0 = bi * tileRows, c0 = bj * tileCols;
        return new DeepSeekSharpException(
            $"tensor: NaN/Inf in rows {r0}..{Math.Min(rows, r0 + tileRows) - 1}, columns {c0}..{Math.Min(cols, c0 + tileCols) - 1} {what}");
    }

    /// <summary>Dequantises both operands on the device, then runs <see cref="Gemm"/> (the values are the same, see
    /// <see cref="IBackend.GemmE4M3"/>).</summary>
    public void GemmE4M3(bool transA, bool transB, int m, int n, int k, DeepSeekSharp.Fp8.Fp8Tensor a, DeepSeekSharp.Fp8.Fp8Tensor b, float beta, Span<float> c, int ldc)
    {
        E4M3Shapes.Check(transA, transB, m, n, k, a, b, c.Length, ldc);
        float[] av = StoragePool.Rent(Math.Max(1, a.Rows * a.Cols)), bv = StoragePool.Rent(Math.Max(1, b.Rows * b.Cols));
        try
        {
            DequantizeE4M3(a.Codes, a.Rows, a.Cols, a.TileRows, a.TileCols, a.Scales, av);
            DequantizeE4M3(b.Codes, b.Rows, b.Cols, b.TileRows, b.TileCols, b.Scales, bv);
            Gemm(transA, transB, m, n, k, 1f, av, Math.Max(1, a.Cols), bv, Math.Max(1, b.Cols), beta, c, ldc);
        }
        finally
        {
            StoragePool.Return(av);
            StoragePool.Return(bv);
        }
    }

    /// <summary>One <see cref="GemmE4M3"/> per group on the group's rows of A (decoded from A's codes into pooled scratch
    /// first, as <see cref="GemmE4M3"/> decodes its operands).</summary>
    public void GroupedGemmE4M3(bool transB, ReadOnlySpan<E4M3GemmGroup> groups, int ldc)
    {
        foreach (var g in groups) E4M3Shapes.CheckGroup(transB, g, ldc);
        foreach (var g in groups)
        {
            if (g.M == 0 || g.N == 0) continue;
            var (a, b) = (g.A, g.B);
            float[] av = StoragePool.Rent(Math.Max(1, g.M * g.K)), bv = StoragePool.Rent(Math.Max(1, b.Rows * b.Cols));
            try
            {
                for (int r = 0; r < g.M; r++)
                    DeepSeekSharp.Fp8.Fp8Quantizer.DequantizeRowRange(a.Codes, a.Cols, a.TileRows, a.TileCols, a.Scales, g.ARow + r, 0, g.K,
                        av.AsSpan(r * g.K, g.K));
                DequantizeE4M3(b.Codes, b.Rows, b.Cols, b.TileRows, b.TileCols, b.Scales, bv);
                Gemm(false, transB, g.M, g.N, g.K, 1f, av, Math.Max(1, g.K), bv, Math.Max(1, b.Cols), 0f, g.C.AsSpan(g.COffset), ldc);
            }
            finally
            {
                StoragePool.Return(av);
                StoragePool.Return(bv);
            }
        }
    }

    public void DequantizeE4M3(ReadOnlySpan<byte> codes, int rows, int cols, int tileRows, int tileCols, ReadOnlySpan<float> scales, Span<float> values)
    {
        int n = rows * cols;
        if (codes.Length < n || values.Length < n) throw new ArgumentException("buffers shorter than rows × cols");
        if (n == 0) return;
        int scaleCount = ((rows + tileRows - 1) / tileRows) * ((cols + tileCols - 1) / tileCols);
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pc = Up(codes[..n]), ps = Up(scales[..scaleCount]), pv = Scratch<float>(n);
            Args().Add(pc).Add(rows).Add(cols).Add(tileRows).Add(tileCols).Add(ps).Add(pv);
            Launch("dequantize_e4m3", LaunchPlan.ElementwiseGrid(n), LaunchPlan.ElementwiseThreads);
            Down(pv, values[..n]);
        }
    }

    public void QuantizeE5M6(ReadOnlySpan<float> x, int rows, int cols, Span<ushort> codes, Span<float> scales)
    {
        int n = rows * cols, across = (cols + 127) / 128;
        if (x.Length < n || codes.Length < n || scales.Length < rows * across) throw new ArgumentException("buffers shorter than the E5M6 tiling");
        if (n == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr px = Up(x[..n]), pc = Scratch<ushort>(n), ps = Scratch<float>((long)rows * across), bad = Scratch<int>(1);
            _gpu.Clear(bad, sizeof(int));
            foreach (var (first, count) in LaunchPlan.RowChunks(rows))
            {
                Args().Add(px.Offset((long)first * cols * sizeof(float))).Add(count).Add(cols).Add(pc.Offset((long)first * cols * sizeof(ushort)))
                    .Add(ps.Offset((long)first * across * sizeof(float))).Add(bad);
                Launch("quantize_e5m6", new Dim3((uint)across, (uint)count), 128);
            }
            int badTile = 0;
            Down(bad, new Span<int>(ref badTile));
            if (badTile != 0)
            {
                int r = (badTile - 1) / across, c0 = (badTile - 1) % across * 128;
                throw new DeepSeekSharpException($"E5M6 cache: NaN/Inf in row {r}, columns {c0}..{Math.Min(cols, c0 + 128) - 1}");
            }
            Down(pc, codes[..n]);
            Down(ps, scales[..(rows * across)]);
        }
    }

    public void DequantizeE5M6(ReadOnlySpan<ushort> codes, int rows, int cols, ReadOnlySpan<float> scales, Span<float> values)
    {
        int n = rows * cols, across = (cols + 127) / 128;
        if (codes.Length < n || values.Length < n) throw new ArgumentException("buffers shorter than rows × cols");
        if (n == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pc = Up(codes[..n]), ps = Up(scales[..(rows * across)]), pv = Scratch<float>(n);
            Args().Add(pc).Add(rows).Add(cols).Add(ps).Add(pv);
            Launch("dequantize_e5m6", LaunchPlan.ElementwiseGrid(n), LaunchPlan.ElementwiseThreads);
            Down(pv, values[..n]);
        }
    }

    // ----- cross-entropy ---------------------------------------------------------------------------------------

    public double CrossEntropyForward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp) =>
        CrossEntropy(logits, targets, v, rowLogSumExp, 0f, Span<float>.Empty);

    public double CrossEntropyForwardBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp, float scale,
        Span<float> dlogits) => CrossEntropy(logits, targets, v, rowLogSumExp, scale, dlogits);

    private double CrossEntropy(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp, float scale, Span<float> dlogits)
    {
        int rows = targets.Length, n = rows * v;
        if (logits.Length < n || rowLogSumExp.Length < rows || (!dlogits.IsEmpty && dlogits.Length < n)) throw new ArgumentException("cross-entropy: buffers shorter than rows × v");
        if (rows == 0) return 0;
        float[] losses = StoragePool.Rent(rows);
        try
        {
            lock (_gate)
            {
                _arena.Reset();
                DevicePtr pl = Up(logits[..n]), pt = Up(targets), plse = Scratch<float>(rows), ploss = Scratch<float>(rows);
                DevicePtr pd = dlogits.IsEmpty ? default : Scratch<float>(n);
                Args().Add(pl).Add(pt).Add(v).Add(plse).Add(ploss).Add(scale).Add(pd);
                Launch("cross_entropy_forward", new Dim3((uint)rows), LaunchPlan.RowThreads(v));
                Down(plse, rowLogSumExp[..rows]);
                Down(ploss, losses.AsSpan(0, rows));
                if (!dlogits.IsEmpty) Down(pd, dlogits[..n]);
            }
            double sum = 0;
            for (int r = 0; r < rows; r++) sum += losses[r];
            return sum;
        }
        finally { StoragePool.Return(losses); }
    }

    public void CrossEntropyBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, ReadOnlySpan<float> rowLogSumExp, float scale,
        Span<float> dlogits)
    {
        int rows = targets.Length, n = rows * v;
        if (logits.Length < n || dlogits.Length < n || rowLogSumExp.Length < rows) throw new ArgumentException("cross-entropy: buffers shorter than rows × v");
        if (rows == 0) return;
        lock (_gate)
        {
            _arena.Reset();
            DevicePtr pl = Up(logits[..n]), pt = Up(targets), plse = Up(rowLogSumExp[..rows]), pd = Up<float>(dlogits[..n]);
            int threads = LaunchPlan.ElementwiseThreads;
            foreach (var (first, count) in LaunchPlan.RowChunks(rows))
            {
                long shift = (long)first * v * sizeof(float);
                Args().Add(pl.Offset(shift)).Add(pt.Offset((long)first * sizeof(int))).Add(v).Add(plse.Offset((long)first * sizeof(float))).Add(scale).Add(pd.Offset(shift));
                Launch("cross_entropy_backward", new Dim3((uint)((v + threads - 1) / threads), (uint)count), threads);
            }
            Down(pd, dlogits[..n]);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _arena.Dispose();
            _args.Dispose();
        }
    }
}

/// <summary>
/// Device memory for one staged call: a bump allocator over chunks (256-byte aligned). <see cref="Reset"/> starts the
/// next call; after a call that needed several chunks it replaces them by one of their total size, so the arena
/// settles at the largest call's footprint and stops allocating.
/// </summary>
internal sealed class DeviceArena(IGpuRuntime gpu) : IDisposable
{
    private const long Alignment = 256, MinChunk = 1L << 20;
    private readonly List<(DevicePtr Pointer, long Bytes)> _chunks = [];
    private int _current;
    private long _offset;

    public DevicePtr Take(long bytes)
    {
        bytes = Math.Max(Alignment, (bytes + Alignment - 1) & ~(Alignment - 1));
        while (_current < _chunks.Count && _offset + bytes > _chunks[_current].Bytes)
        {
            _current++;
            _offset = 0;
        }
        if (_current == _chunks.Count)
        {
            long size = Math.Max(MinChunk, Math.Max(bytes, _chunks.Count == 0 ? 0 : _chunks[^1].Bytes * 2));
            _chunks.Add((gpu.Allocate(size), size));
            _offset = 0;
        }
        var p = _chunks[_current].Pointer.Offset(_offset);
        _offset += bytes;
        return p;
    }

    public void Reset()
    {
        if (_chunks.Count > 1)
        {
            long total = 0;
            foreach (var (pointer, size) in _chunks)
            {
                total += size;
                gpu.Free(pointer);
            }
            _chunks.Clear();
            _chunks.Add((gpu.Allocate(total), total));
        }
        _current = 0;
        _offset = 0;
    }

    public void Dispose()
    {
        foreach (var (pointer, _) in _chunks) gpu.Free(pointer);
        _chunks.Clear();
    }
}
