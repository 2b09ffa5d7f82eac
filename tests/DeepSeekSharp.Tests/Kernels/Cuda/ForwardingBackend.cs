using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels.Cuda;

/// <summary>An <see cref="IBackend"/> that forwards every call to another; tests override one operation to break it on purpose.</summary>
internal class ForwardingBackend(IBackend inner) : IBackend
{
    public string Name => "forwarding(" + inner.Name + ")";
    public virtual void RunConcurrently(int count, Action<int> body) => inner.RunConcurrently(count, body);
    public virtual void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb,
        float beta, Span<float> c, int ldc) => inner.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    public virtual void GroupedGemm(bool transA, bool transB, float alpha, float beta, int lda, int ldb, int ldc, ReadOnlySpan<GemmGroup> groups,
        ReadOnlySpan<int> bRows) => inner.GroupedGemm(transA, transB, alpha, beta, lda, ldb, ldc, groups, bRows);
    public virtual PackedMatrix PackGemmB(bool transB, ReadOnlySpan<float> b, int ldb, int n, int k) => inner.PackGemmB(transB, b, ldb, n, k);
    public virtual void GemmPackedB(bool transA, int m, float alpha, ReadOnlySpan<float> a, int lda, PackedMatrix b, float beta, Span<float> c, int ldc) =>
        inner.GemmPackedB(transA, m, alpha, a, lda, b, beta, c, ldc);
    public virtual void GemmCompressedWeight(int m, ReadOnlySpan<float> a, CompressedWeight w, Span<float> c) => inner.GemmCompressedWeight(m, a, w, c);
    public virtual void RmsNormForward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, int d, Span<float> y, Span<float> invRms) =>
        inner.RmsNormForward(x, w, eps, d, y, invRms);
    public virtual void RmsNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> invRms, ReadOnlySpan<float> dy, int d,
        Span<float> dx, Span<float> dw) => inner.RmsNormBackward(x, w, invRms, dy, d, dx, dw);
    public virtual void SiluMulForward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) => inner.SiluMulForward(a, b, y);
    public virtual void SiluMulBackward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> dy, Span<float> da, Span<float> db,
        bool accumulate = true) => inner.SiluMulBackward(a, b, dy, da, db, accumulate);
    public virtual void Rope(ReadOnlySpan<float> x, Span<float> y, int rows, int groups, int stride, int offset, int ropeDim, ReadOnlySpan<int> positions,
        ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse) => inner.Rope(x, y, rows, groups, stride, offset, ropeDim, positions, cos, sin, inverse);
    public virtual void MlaAttentionForward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        Span<float> o, Span<float> logSumExp) => inner.MlaAttentionForward(s, q, kvb, kpe, o, logSumExp);
    public virtual void MlaAttentionBackward(in MlaAttentionShape s, ReadOnlySpan<float> q, ReadOnlySpan<float> kvb, ReadOnlySpan<float> kpe,
        ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dO, Span<float> dq, Span<float> dkvb, Span<float> dkpe) =>
        inner.MlaAttentionBackward(s, q, kvb, kpe, logSumExp, dO, dq, dkvb, dkpe);
    public virtual void QuantizeE4M3(ReadOnlySpan<float> x, int rows, int cols, int tileRows, int tileCols, Span<byte> codes, Span<float> scales,
        Span<float> dequantized) => inner.QuantizeE4M3(x, rows, cols, tileRows, tileCols, codes, scales, dequantized);
    public virtual void GemmE4M3(bool transA, bool transB, int m, int n, int k, DeepSeekSharp.Fp8.Fp8Tensor a, DeepSeekSharp.Fp8.Fp8Tensor b, float beta,
        Span<float> c, int ldc) => inner.GemmE4M3(transA, transB, m, n, k, a, b, beta, c, ldc);
    public virtual void GroupedGemmE4M3(bool transB, ReadOnlySpan<E4M3GemmGroup> groups, int ldc) => inner.GroupedGemmE4M3(transB, groups, ldc);
    public virtual void DequantizeE4M3(ReadOnlySpan<byte> codes, int rows, int cols, int tileRows, int tileCols, ReadOnlySpan<float> scales,
        Span<float> values) => inner.DequantizeE4M3(codes, rows, cols, tileRows, tileCols, scales, values);
    public virtual void QuantizeE5M6(ReadOnlySpan<float> x, int rows, int cols, Span<ushort> codes, Span<float> scales) => inner.QuantizeE5M6(x, rows, cols, codes, scales);
    public virtual void DequantizeE5M6(ReadOnlySpan<ushort> codes, int rows, int cols, ReadOnlySpan<float> scales, Span<float> values) =>
        inner.DequantizeE5M6(codes, rows, cols, scales, values);
    public virtual double CrossEntropyForward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp) =>
        inner.CrossEntropyForward(logits, targets, v, rowLogSumExp);
    public virtual double CrossEntropyForwardBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, Span<float> rowLogSumExp, float scale,
        Span<float> dlogits) => inner.CrossEntropyForwardBackward(logits, targets, v, rowLogSumExp, scale, dlogits);
    public virtual void CrossEntropyBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, int v, ReadOnlySpan<float> rowLogSumExp, float scale,
        Span<float> dlogits) => inner.CrossEntropyBackward(logits, targets, v, rowLogSumExp, scale, dlogits);
}
