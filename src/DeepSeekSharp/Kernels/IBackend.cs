namespace DeepSeekSharp.Kernels;

/// <summary>
/// The kernels every op is built from. Autograd ops never loop over data themselves: they call these, so a
/// second backend (CUDA) is one new implementation of this interface. Shapes are row-major; the shape comment
/// on each parameter names its layout. Implementations must not allocate per call on hot paths.
/// </summary>
public interface IBackend
{
    string Name { get; }

    /// <summary>
    /// Runs <paramref name="body"/> for 0..count-1, independent pieces of work (the experts of an MoE layer), concurrently
    /// where the backend can; kernels called from inside a piece run on that piece's worker alone. Pieces are started in
    /// index order, so callers put the largest first.
    /// </summary>
    void RunConcurrently(int count, Action<int> body);

    /// <summary>C[m,n] = alpha · op(A) · op(B) + beta · C (row-major, op = optional transpose).</summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc);

    /// <summary>
    /// Grouped GEMM, one call for many products of different shapes (every expert of an MoE layer, tokens grouped by
    /// expert): for each group, C = alpha · op(A) · op(B) + beta · C with the group's M, N, K and operands at its
    /// offsets; lda/ldb/ldc are shared. A group with <see cref="GemmGroup.BRowsOffset"/> ≥ 0 reads op(B) (not
    /// transposed) through <paramref name="bRows"/>: its depth row p is row bRows[BRowsOffset + p] of B. Groups must
    /// not write overlapping C.
    /// </summary>
    void GroupedGemm(bool transA, bool transB, float alpha, float beta, int lda, int ldb, int ldc, ReadOnlySpan<GemmGroup> groups,
        ReadOnlySpan<int> bRows);

    /// <summary>Packs op(B) [k, n] once for several <see cref="GemmPackedB"/> calls that share it (dispose the result).</summary>
    PackedMatrix PackGemmB(bool transB, ReadOnlySpan<float> b, int ldb, int n, int k);

    /// <summary>C[m, n] = alpha · op(A) · B + beta · C with B packed by <see cref="PackGemmB"/> (beta = 0 never reads C).</summary>
    void GemmPackedB(bool transA, int m, float alpha, ReadOnlySpan<float> a, int lda, PackedMatrix b, float beta, Span<float> c, int ldc);

    /// <summary>C[m, n] = A[m, k] · Wᵀ with W [n, k] stored compressed (BF16 or FP8 blocks), widened on the fly (see Sgemm).</summary>
    void GemmCompressedWeight(int m, ReadOnlySpan<float> a, DeepSeekSharp.Tensors.CompressedWeight w, Span<float> c);

    /// <summary>y = x · rsqrt(mean(x²)+eps) · w per row; writes 1/rms per row to <paramref name="invRms"/>.</summary>
    void RmsNormForward(ReadOnlySpan<float> x /* [rows, d] */, ReadOnlySpan<float> w /* [d] */, float eps, int d,
        Span<float> y /* [rows, d] */, Span<float> invRms /* [rows] */);

    /// <summary>Accumulates dx (if not empty) and dw (if not empty) of RMSNorm.</summary>
    void RmsNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> invRms, ReadOnlySpan<float> dy, int d,
        Span<float> dx, Span<float> dw);

    /// <summary>y = silu(a) ⊙ b.</summary>
    void SiluMulForward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y);

    /// <summary>
    /// Accumulates da and db of y = silu(a) ⊙ b (either may be empty), or stores them when <paramref name="accumulate"/>
    /// is false (the buffers' old contents are then never read).
    /// </summary>
    void SiluMulBackward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> dy, Span<float> da, Span<float> db,
        bool accumulate = true);

    /// <summary>
    /// Rotates interleaved pairs of <c>x[row, g·stride + offset + 2i, +1]</c> by angle with cos/sin table rows
    /// <c>positions[row]</c> (table [maxPos, ropeDim/2]); <paramref name="inverse"/> rotates back (the backward).
    /// Elements outside the rope range are copied unchanged.
    /// </summary>
    void Rope(ReadOnlySpan<float> x, Span<float> y, int rows, int groups, int stride, int offset, int ropeDim,
        ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse);

    /// <summary>Causal MLA attention forward, within each document of the shape; see <see cref="Cpu.MlaAttentionKernels"/> for the layout.</summary>
    void MlaAttentionForward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> logSumExp);

    void MlaAttentionBackward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpe);

    /// <summary>
    /// FP8 E4M3 quantisation of x [rows, cols] with one scale per tileRows × tileCols tile (training.md, FP8; see
    /// <see cref="DeepSeekSharp.Fp8.Fp8Quantizer.QuantizeBands"/>): scales [ceil(rows/tileRows), ceil(cols/tileCols)],
    /// codes [rows, cols] (may be empty), dequantised values code · scale [rows, cols] (may be empty).
    /// </summary>
    void QuantizeE4M3(ReadOnlySpan<float> x, int rows, int cols, int tileRows, int tileCols, Span<byte> codes, Span<float> scales,
        Span<float> dequantized);

    /// <summary>
    /// c = op(a) · op(b) + beta · c on E4M3 operands (codes with tile scales, <see cref="DeepSeekSharp.Fp8.Fp8Tensor"/>):
    /// op(a) = aᵀ with a [k, m] when <paramref name="transA"/>, else a [m, k]; op(b) = bᵀ with b [n, k] when
    /// <paramref name="transB"/> (a weight [out, in]), else b [k, n]. The
    /// products and their accumulation are fp32 on the values code · scale: the result of dequantising both and calling
    /// <see cref="Gemm"/>, without the fp32 copies (the CPU decodes the codes where it packs its operands).
    /// </summary>
    void GemmE4M3(bool transA, bool transB, int m, int n, int k, DeepSeekSharp.Fp8.Fp8Tensor a, DeepSeekSharp.Fp8.Fp8Tensor b, float beta, Span<float> c, int ldc);

    /// <summary>
    /// Grouped <see cref="GemmE4M3"/> (the forward GEMMs of FP8 routed experts, all experts in one call): for each group,
    /// C (M × N at <see cref="E4M3GemmGroup.COffset"/>, row stride <paramref name="ldc"/>) = rows [ARow, ARow + M) of A
    /// [·, K] · op(B), op(B) = Bᵀ with B [N, K] when <paramref name="transB"/>, else B [K, N]. C is overwritten. Each
    /// group's values are those <see cref="GemmE4M3"/> computes on the same rows (bit for bit on the CPU). Groups must not
    /// write overlapping C.
    /// </summary>
    void GroupedGemmE4M3(bool transB, ReadOnlySpan<E4M3GemmGroup> groups, int ldc);

    /// <summary>values[r, c] = E4M3(codes[r, c]) · scales[r / tileRows, c / tileCols] (the inverse of <see cref="QuantizeE4M3"/>).</summary>
    void DequantizeE4M3(ReadOnlySpan<byte> codes, int rows, int cols, int tileRows, int tileCols, ReadOnlySpan<float> scales, Span<float> values);

    /// <summary>
    /// E5M6 codes of x [rows, cols] with one power-of-two scale per 1×128 tile (DeepSeek-V3's o_proj input cache, see
    /// <see cref="DeepSeekSharp.Fp8.E5M6Tiles"/>): scales [rows, ceil(cols/128)], codes [rows, cols].
    /// </summary>
    void QuantizeE5M6(ReadOnlySpan<float> x, int rows, int cols, Span<ushort> codes, Span<float> scales);

    /// <summary>values[r, c] = E5M6(codes[r, c]) · scales[r, c / 128] (the inverse of <see cref="QuantizeE5M6"/>).</summary>
    void DequantizeE5M6(ReadOnlySpan<ushort> codes, int rows, int cols, ReadOnlySpan<float> scales, Span<float> values);

    /// <summary>Per-row softmax cross-entropy; returns the summed loss over rows with target ≥ 0.</summary>
    double CrossEntropyForward(ReadOnlySpan<float> logits /* [rows, v] */, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp);

    /// <summary>
    /// <see cref="CrossEntropyForward"/> and the gradient in one sweep: returns the summed loss, writes each row's
    /// log-sum-exp and overwrites dlogits = scale · (softmax − onehot) (zero for rows with target &lt; 0).
    /// </summary>
    double CrossEntropyForwardBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp, float scale,
        Span<float> dlogits);

    /// <summary>Accumulates dlogits = scale · (softmax − onehot) for rows with target ≥ 0.</summary>
    void CrossEntropyBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, ReadOnlySpan<float> rowLogSumExp,
        float scale, Span<float> dlogits);
}

/// <summary>
/// Shape of one MLA attention call: q [B, T, H, dn+dr] (rope already applied to the last dr), kvb [B, T, H, dn+dv]
/// (k_nope then v per head), kpe [B, T, dr] (roped, shared by all heads), o [B, T, H, dv], logSumExp [B, H, T].
/// <paramref name="Documents"/> (flash-attention's varlen cu_seqlens over the B·T rows, every b·T among them) cuts the
/// sequences into documents that attend only within themselves; null: one document per sequence.
/// </summary>
public readonly record struct MlaAttentionShape(int Batch, int SeqLen, int Heads, int NopeDim, int RopeDim, int VDim, float Scale,
    int[]? Documents = null)
{
    public int QDim => NopeDim + RopeDim;
    public int KvbDim => NopeDim + VDim;

    /// <summary>How many documents (the sequences themselves when <see cref="Documents"/> is null).</summary>
    public int DocumentCount => Documents is null ? Batch : Documents.Length - 1;

    /// <summary>Row offset and length of document <paramref name="d"/>.</summary>
    public (int Start, int Length) Document(int d) =>
        Documents is null ? (d * SeqLen, SeqLen) : (Documents[d], Documents[d + 1] - Documents[d]);
}

/// <summary>
/// One product of <see cref="IBackend.GroupedGemm"/>: op(A) M×K, op(B) K×N and C M×N, each starting at its offset in
/// its array (experts' weights are separate arrays, their token rows one stacked array).
/// </summary>
public readonly record struct GemmGroup(int M, int N, int K, float[] A, int AOffset, float[] B, int BOffset, float[] C, int COffset,
    int BRowsOffset = -1);

/// <summary>
/// One product of <see cref="IBackend.GroupedGemmE4M3"/>: rows [<paramref name="ARow"/>, ARow + M) of the E4M3
/// <paramref name="A"/> (an expert's tokens among the stacked rows; ARow a multiple of A's tile height) times op(B)
/// (the expert's weight, 128×128 tiles), into C at <paramref name="COffset"/>.
/// </summary>
public readonly record struct E4M3GemmGroup(int M, int N, int K, DeepSeekSharp.Fp8.Fp8Tensor A, int ARow, DeepSeekSharp.Fp8.Fp8Tensor B,
    float[] C, int COffset);
