// DeepSeekSharp CUDA kernels: the IBackend operations that are not GEMMs (cuBLASLt does those).
//
// Compiled at run time by NVRTC (no headers: every helper is written here), and by a C++ compiler on machines
// without a GPU, where tests run each kernel on an emulated grid and compare it with the CPU backend. Two rules
// keep both possible: every thread of a block reaches every __syncthreads and every warp/block reduction (no
// divergent barriers), and kernels use only the built-ins the emulator provides (see tests/.../Cuda/emulator.h).
//
// Layouts are row-major and match IBackend's documentation; "rows" is the product of the leading dimensions.
// Results that the CPU backend computes with the same operations in the same order (quantisation codes, RoPE,
// SwiGLU) are bit-identical; reductions (norms, softmax sums) differ in summation order only.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define DSS_WARP 32
// The launch's dynamic shared memory (the emulator maps it to a buffer of its own).
#ifndef DSS_DYNAMIC_SHARED
#define DSS_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ bool dss_isfinite(float v) { return (__float_as_uint(v) & 0x7F800000u) != 0x7F800000u; }

// ---------------------------------------------------------------------------------------------------------------
// Reductions. blockDim.x is a multiple of 32 (at most 1024); every thread of the block calls them.
// ---------------------------------------------------------------------------------------------------------------

__device__ float dss_warp_sum(float v)
{
    for (int offset = DSS_WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ float dss_warp_max(float v)
{
    for (int offset = DSS_WARP / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the block, returned to every thread. scratch: 32 floats of shared memory.
__device__ float dss_block_sum(float v, float* scratch)
{
    int lane = threadIdx.x % DSS_WARP, warp = threadIdx.x / DSS_WARP, warps = blockDim.x / DSS_WARP;
    v = dss_warp_sum(v);
    __syncthreads(); // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return dss_warp_sum(v);
}

__device__ float dss_block_max(float v, float* scratch)
{
    int lane = threadIdx.x % DSS_WARP, warp = threadIdx.x / DSS_WARP, warps = blockDim.x / DSS_WARP;
    v = dss_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return dss_warp_max(v);
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm: y = x · rsqrt(mean(x²) + eps) · w per row (model.md). One block per row.
// ---------------------------------------------------------------------------------------------------------------

extern "C" __global__ void rmsnorm_forward(const float* x, const float* w, float eps, int d, float* y, float* inv_rms)
{
    __shared__ float scratch[32];
    long row = blockIdx.x;
    const float* xr = x + row * d;
    float* yr = y + row * d;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) sq += xr[i] * xr[i];
    sq = dss_block_sum(sq, scratch);
    float r = 1.0f / sqrtf(sq / d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = xr[i] * r * w[i];
    if (threadIdx.x == 0) inv_rms[row] = r;
}

// dx += r·(w ⊙ dy) − x · r³/d · Σ(w ⊙ dy ⊙ x). One block per row.
extern "C" __global__ void rmsnorm_backward_dx(const float* x, const float* w, const float* inv_rms, const float* dy, int d, float* dx)
{
    __shared__ float scratch[32];
    long row = blockIdx.x;
    const float* xr = x + row * d;
    const float* gr = dy + row * d;
    float* dr = dx + row * d;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dot += w[i] * gr[i] * xr[i];
    dot = dss_block_sum(dot, scratch);
    float r = inv_rms[row];
    float c = r * r * r * dot / d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dr[i] += r * w[i] * gr[i] - xr[i] * c;
}

// dw_i += Σ_rows dy_i · x_i · r: one thread per column walks the rows (coalesced across the warp, deterministic).
extern "C" __global__ void rmsnorm_backward_dw(const float* x, const float* inv_rms, const float* dy, int d, int rows, float* dw)
{
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    float acc = 0.0f;
    for (long r = 0; r < rows; r++) acc += dy[r * d + col] * x[r * d + col] * inv_rms[r];
    dw[col] += acc;
}

// ---------------------------------------------------------------------------------------------------------------
// SwiGLU gate: y = silu(a) ⊙ b with silu(a) = a · σ(a).
// ---------------------------------------------------------------------------------------------------------------

__device__ float dss_sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

extern "C" __global__ void silu_mul_forward(const float* a, const float* b, float* y, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        float s = dss_sigmoid(a[i]);
        y[i] = a[i] * s * b[i];
    }
}

// da = dy · b · σ(a)·(1 + a·(1 − σ(a))), db = dy · silu(a); either output may be null; accumulate or store.
extern "C" __global__ void silu_mul_backward(const float* a, const float* b, const float* dy, float* da, float* db, long n, int accumulate)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        float s = dss_sigmoid(a[i]);
        float g = dy[i];
        if (da)
        {
            float v = g * b[i] * s * (1.0f + a[i] * (1.0f - s));
            da[i] = accumulate ? da[i] + v : v;
        }
        if (db)
        {
            float v = g * a[i] * s;
            db[i] = accumulate ? db[i] + v : v;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// RoPE on interleaved pairs (model.md, "RoPE layout"): (x0, x1) → (x0·c − x1·s, x0·s + x1·c) on dims
// [offset, offset + rope_dim) of each of `groups` groups of width `stride`; the rest is copied. inverse rotates back.
// grid: (ceil(row_len / blockDim.x), rows). In place is allowed: a pair is read and written by one thread.
// ---------------------------------------------------------------------------------------------------------------

extern "C" __global__ void rope_rotate(const float* x, float* y, int groups, int stride, int offset, int rope_dim,
    const int* positions, const float* cos_table, const float* sin_table, int inverse)
{
    int row_len = groups * stride;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    long row = blockIdx.y;
    if (col >= row_len) return;
    const float* xr = x + row * row_len;
    float* yr = y + row * row_len;
    int within = col % stride - offset;
    if (within < 0 || within >= rope_dim)
    {
        yr[col] = xr[col];
        return;
    }
    if (within % 2 == 1) return; // the even element's thread rotates the pair
    int half = rope_dim / 2, i = within / 2;
    const float* c = cos_table + (long)positions[row] * half;
    const float* s = sin_table + (long)positions[row] * half;
    float si = inverse ? -s[i] : s[i];
    float x0 = xr[col], x1 = xr[col + 1];
    yr[col] = x0 * c[i] - x1 * si;
    yr[col + 1] = x0 * si + x1 * c[i];
}

// ---------------------------------------------------------------------------------------------------------------
// Softmax cross-entropy per row (rows with target < 0 are ignored): lse = log Σ exp(z), loss = lse − z[target].
// One block per row. With dlogits given, writes dz = scale · (softmax − onehot) (zero rows for ignored targets).
// ---------------------------------------------------------------------------------------------------------------

extern "C" __global__ void cross_entropy_forward(const float* logits, const int* targets, int v, float* lse, float* row_loss,
    float scale, float* dlogits)
{
    __shared__ float scratch[32];
    long row = blockIdx.x;
    const float* z = logits + row * v;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < v; i += blockDim.x) m = fmaxf(m, z[i]);
    m = dss_block_max(m, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < v; i += blockDim.x) s += expf(z[i] - m);
    s = dss_block_sum(s, scratch);
    float l = m + logf(s);
    int t = targets[row];
    if (threadIdx.x == 0)
    {
        lse[row] = l;
        row_loss[row] = t >= 0 ? l - z[t] : 0.0f;
    }
    if (!dlogits) return;
    float* dz = dlogits + row * v;
    for (int i = threadIdx.x; i < v; i += blockDim.x)
        dz[i] = t < 0 ? 0.0f : scale * expf(z[i] - l) - (i == t ? scale : 0.0f);
}

// dz += scale · (softmax − onehot) for rows with target ≥ 0. grid: (ceil(v / blockDim.x), rows).
extern "C" __global__ void cross_entropy_backward(const float* logits, const int* targets, int v, const float* lse, float scale, float* dlogits)
{
    long row = blockIdx.y;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = targets[row];
    if (i >= v || t < 0) return;
    float g = scale * expf(logits[row * v + i] - lse[row]);
    if (i == t) g -= scale;
    dlogits[row * v + i] += g;
}

// ---------------------------------------------------------------------------------------------------------------
// FP8 E4M3 (training.md, FP8): bit-level encoder identical to the CPU's (E4M3Fast): normals round the float32
// mantissa to 3 bits (nearest, ties to even), subnormals round to the 2^-9 grid, |x| ≥ 448 saturates, NaN → 0x7F.
// ---------------------------------------------------------------------------------------------------------------

__device__ u8 dss_e4m3_encode(float value)
{
    u32 u = __float_as_uint(value);
    u32 sign = (u >> 24) & 0x80u;
    u32 a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return 0x7F;
    if (a >= 0x43E00000u) return (u8)(sign | 0x7Eu);
    if (a >= 0x3C800000u)
    {
        u32 r = (a + 0x7FFFFu + ((a >> 20) & 1u)) & 0xFFF00000u;
        int exponent = (int)(r >> 23) - 127;
        u32 mantissa = (r >> 20) & 7u;
        u32 code = ((u32)(exponent + 7) << 3) | mantissa;
        return (u8)(sign | (code < 0x7Eu ? code : 0x7Eu));
    }
    float scaled = __uint_as_float(a) * 512.0f; // exact: a power-of-two scaling
    return (u8)(sign | (u32)rintf(scaled));
}

__device__ float dss_e4m3_decode(u8 code)
{
    u32 sign = (u32)(code & 0x80) << 24;
    u32 e = (code >> 3) & 15u, m = code & 7u;
    if (e == 15 && m == 7) return __uint_as_float(0x7FC00000u);
    if (e == 0) return __uint_as_float(sign | __float_as_uint((float)m * (1.0f / 512.0f)));
    return __uint_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

// One block per tile of tile_rows × tile_cols: scale = amax / 448 (1 for an all-zero tile), codes = E4M3(x / scale),
// dequantized = value(code) · scale. grid: (tiles across, tile bands). codes/dequantized may be null. A tile with
// NaN/Inf writes its index + 1 to *bad (the host raises the CPU backend's error).
extern "C" __global__ void quantize_e4m3(const float* x, int rows, int cols, int tile_rows, int tile_cols, u8* codes, float* scales,
    float* dequantized, int* bad)
{
    __shared__ float scratch[32];
    __shared__ int nonfinite;
    int bj = blockIdx.x, bi = blockIdx.y;
    int r0 = bi * tile_rows, c0 = bj * tile_cols;
    int tr = min(tile_rows, rows - r0), tc = min(tile_cols, cols - c0);
    long n = (long)tr * tc;
    if (threadIdx.x == 0) nonfinite = 0;
    __syncthreads();
    float amax = 0.0f;
    for (long i = threadIdx.x; i < n; i += blockDim.x)
    {
        float v = x[(long)(r0 + i / tc) * cols + c0 + i % tc];
        if (!dss_isfinite(v)) nonfinite = 1;
        amax = fmaxf(amax, fabsf(v));
    }
    amax = dss_block_max(amax, scratch);
    int tiles_across = (cols + tile_cols - 1) / tile_cols;
    if (nonfinite)
    {
        if (threadIdx.x == 0) *bad = bi * tiles_across + bj + 1;
        return;
    }
    float s = amax == 0.0f ? 1.0f : amax / 448.0f;
    if (threadIdx.x == 0) scales[bi * tiles_across + bj] = s;
    for (long i = threadIdx.x; i < n; i += blockDim.x)
    {
        long idx = (long)(r0 + i / tc) * cols + c0 + i % tc;
        u8 code = dss_e4m3_encode(x[idx] / s);
        if (codes) codes[idx] = code;
        if (dequantized) dequantized[idx] = dss_e4m3_decode(code) * s;
    }
}

extern "C" __global__ void dequantize_e4m3(const u8* codes, int rows, int cols, int tile_rows, int tile_cols, const float* scales, float* values)
{
    long n = (long)rows * cols;
    int tiles_across = (cols + tile_cols - 1) / tile_cols;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        int r = (int)(i / cols), c = (int)(i % cols);
        values[i] = dss_e4m3_decode(codes[i]) * scales[(r / tile_rows) * tiles_across + c / tile_cols];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// E5M6 (bias 15, 6 mantissa bits, max 65024) with one power-of-two scale per 1×128 tile: DeepSeek-V3's o_proj input
// cache. Encoder identical to the CPU's (E5M6Fast).
// ---------------------------------------------------------------------------------------------------------------

__device__ u16 dss_e5m6_encode(float value)
{
    u32 u = __float_as_uint(value);
    u32 sign = (u >> 20) & 0x800u;
    u32 a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return 0x7C1; // NaN
    if (a >= 0x38800000u)
    {
        u32 r = a < 0x477E0000u ? a : 0x477E0000u;
        r = (r + 0xFFFFu + ((r >> 17) & 1u)) & 0xFFFE0000u;
        u32 code = (r >> 17) - ((127u - 15u) << 6);
        return (u16)(sign | (code < 0x7BFu ? code : 0x7BFu));
    }
    float scaled = __uint_as_float(a) * 1048576.0f;
    return (u16)(sign | (u32)rintf(scaled));
}

__device__ float dss_e5m6_decode(u16 code)
{
    u32 sign = (u32)(code & 0x800) << 20;
    u32 e = (code >> 6) & 31u, m = code & 63u;
    if (e == 31) return m == 0 ? __uint_as_float(sign | 0x7F800000u) : __uint_as_float(0x7FC00000u);
    if (e == 0) return __uint_as_float(sign | __float_as_uint((float)m * (1.0f / 1048576.0f)));
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 17));
}

// The smallest power of two s with amax / s ≤ 65024 (1 for an all-zero tile), as E5M6Tiles.PowerOfTwoScale.
__device__ float dss_power_of_two_scale(float amax)
{
    if (amax == 0.0f) return 1.0f;
    double ratio = amax / 65024.0;
    int e = ilogb(ratio);
    if (ldexp(1.0, e) < ratio) e++;
    e = e < -126 ? -126 : (e > 127 ? 127 : e);
    return (float)ldexp(1.0, e);
}

// One block (128 threads) per 1×128 tile. grid: (tiles across, rows).
extern "C" __global__ void quantize_e5m6(const float* x, int rows, int cols, u16* codes, float* scales, int* bad)
{
    __shared__ float scratch[32];
    __shared__ int nonfinite;
    int bj = blockIdx.x;
    long r = blockIdx.y;
    int c0 = bj * 128, len = min(128, cols - c0);
    int tiles_across = (cols + 127) / 128;
    if (threadIdx.x == 0) nonfinite = 0;
    __syncthreads();
    float amax = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x)
    {
        float v = x[r * cols + c0 + i];
        if (!dss_isfinite(v)) nonfinite = 1;
        amax = fmaxf(amax, fabsf(v));
    }
    amax = dss_block_max(amax, scratch);
    if (nonfinite)
    {
        if (threadIdx.x == 0) *bad = (int)r * tiles_across + bj + 1;
        return;
    }
    float s = dss_power_of_two_scale(amax);
    float inverse = 1.0f / s;
    if (threadIdx.x == 0) scales[r * tiles_across + bj] = s;
    for (int i = threadIdx.x; i < len; i += blockDim.x) codes[r * cols + c0 + i] = dss_e5m6_encode(x[r * cols + c0 + i] * inverse);
}

extern "C" __global__ void dequantize_e5m6(const u16* codes, int rows, int cols, const float* scales, float* values)
{
    long n = (long)rows * cols;
    int tiles_across = (cols + 127) / 128;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        long r = i / cols;
        int c = (int)(i % cols);
        values[i] = dss_e5m6_decode(codes[i]) * scales[r * tiles_across + c / 128];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Causal MLA attention in training form (model.md, MLA): per head, keys are [k_nope ; k_pe] with k_pe shared by all
// heads, values the second part of kv_b's output. q [B,T,H,dn+dr], kvb [B,T,H,dn+dv], kpe [B,T,dr], o [B,T,H,dv],
// lse [B,H,T]. One block per query row (grid: T, H, B); dynamic shared memory holds the row's scores [T] and its
// query [dn+dr]. These are the straightforward kernels (every score recomputed from global memory): correct first.
// ---------------------------------------------------------------------------------------------------------------

struct DssMla
{
    int batch, seq, heads, dn, dr, dv;
    float scale;
};

__device__ float dss_mla_score(const float* q_row, const float* kvb, const float* kpe, DssMla s, int b, int h, int j)
{
    const float* k = kvb + (((long)b * s.seq + j) * s.heads + h) * (s.dn + s.dv);
    const float* kp = kpe + ((long)b * s.seq + j) * s.dr;
    float dot = 0.0f;
    for (int d = 0; d < s.dn; d++) dot += q_row[d] * k[d];
    for (int d = 0; d < s.dr; d++) dot += q_row[s.dn + d] * kp[d];
    return dot * s.scale;
}

extern "C" __global__ void mla_attention_forward(const float* q, const float* kvb, const float* kpe, DssMla s, float* o, float* lse)
{
    DSS_DYNAMIC_SHARED(float, shared);
    __shared__ float scratch[32];
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int qd = s.dn + s.dr;
    float* scores = shared;          // [T]
    float* q_row = shared + s.seq;   // [dn + dr]
    const float* qg = q + (((long)b * s.seq + t) * s.heads + h) * qd;
    for (int d = threadIdx.x; d < qd; d += blockDim.x) q_row[d] = qg[d];
    __syncthreads();
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x)
    {
        float v = dss_mla_score(q_row, kvb, kpe, s, b, h, j);
        scores[j] = v;
        m = fmaxf(m, v);
    }
    m = dss_block_max(m, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x)
    {
        float p = expf(scores[j] - m);
        scores[j] = p;
        sum += p;
    }
    sum = dss_block_sum(sum, scratch); // its barriers also publish scores[]
    float inverse = 1.0f / sum;
    float* og = o + (((long)b * s.seq + t) * s.heads + h) * s.dv;
    for (int d = threadIdx.x; d < s.dv; d += blockDim.x)
    {
        float acc = 0.0f;
        for (int j = 0; j <= t; j++) acc += scores[j] * kvb[(((long)b * s.seq + j) * s.heads + h) * (s.dn + s.dv) + s.dn + d];
        og[d] = acc * inverse;
    }
    if (threadIdx.x == 0) lse[((long)b * s.heads + h) * s.seq + t] = m + logf(sum);
}

// Query side of the backward, one block per query row: P = exp(S − lse), dP = dO·Vᵀ, δ = Σ P·dP, dS = P·(dP − δ);
// dq += scale · dS·K. Writes δ [B,H,T] for the key-side kernel. Dynamic shared memory: P [T], dP then dS [T], dO row [dv].
extern "C" __global__ void mla_attention_backward_query(const float* q, const float* kvb, const float* kpe, const float* lse,
    const float* d_out, DssMla s, float* dq, float* delta)
{
    DSS_DYNAMIC_SHARED(float, shared);
    __shared__ float scratch[32];
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int qd = s.dn + s.dr, kd = s.dn + s.dv;
    float* p_row = shared;                 // [T]
    float* ds = shared + s.seq;            // [T]
    float* do_row = shared + 2 * s.seq;    // [dv]
    const float* qg = q + (((long)b * s.seq + t) * s.heads + h) * qd;
    const float* dog = d_out + (((long)b * s.seq + t) * s.heads + h) * s.dv;
    for (int d = threadIdx.x; d < s.dv; d += blockDim.x) do_row[d] = dog[d];
    __syncthreads();
    float l = lse[((long)b * s.heads + h) * s.seq + t];
    float partial = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x)
    {
        float p = expf(dss_mla_score(qg, kvb, kpe, s, b, h, j) - l);
        const float* v = kvb + (((long)b * s.seq + j) * s.heads + h) * kd + s.dn;
        float dp = 0.0f;
        for (int d = 0; d < s.dv; d++) dp += do_row[d] * v[d];
        p_row[j] = p;
        ds[j] = dp;
        partial += p * dp;
    }
    float dlt = dss_block_sum(partial, scratch);
    for (int j = threadIdx.x; j <= t; j += blockDim.x) ds[j] = p_row[j] * (ds[j] - dlt); // the same thread wrote entry j
    __syncthreads();
    float* dqg = dq + (((long)b * s.seq + t) * s.heads + h) * qd;
    for (int d = threadIdx.x; d < qd; d += blockDim.x)
    {
        float acc = 0.0f;
        if (d < s.dn)
            for (int j = 0; j <= t; j++) acc += ds[j] * kvb[(((long)b * s.seq + j) * s.heads + h) * kd + d];
        else
            for (int j = 0; j <= t; j++) acc += ds[j] * kpe[((long)b * s.seq + j) * s.dr + d - s.dn];
        dqg[d] += s.scale * acc;
    }
    if (threadIdx.x == 0) delta[((long)b * s.heads + h) * s.seq + t] = dlt;
}

// Key side of the backward, one block per key row j and head: dk_nope_j += scale · Σ_t dS_tj q_nope_t,
// dv_j += Σ_t P_tj dO_t, and this head's share of dk_pe_j into dkpe_partial [B,H,T,dr] (summed over heads after).
// Dynamic shared memory: P [T] and dS [T].
extern "C" __global__ void mla_attention_backward_key(const float* q, const float* kvb, const float* kpe, const float* lse,
    const float* d_out, const float* delta, DssMla s, float* dkvb, float* dkpe_partial)
{
    DSS_DYNAMIC_SHARED(float, shared);
    int j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int qd = s.dn + s.dr, kd = s.dn + s.dv;
    float* p_col = shared;          // [T], entries t ≥ j
    float* ds_col = shared + s.seq; // [T]
    const float* v = kvb + (((long)b * s.seq + j) * s.heads + h) * kd + s.dn;
    for (int t = j + threadIdx.x; t < s.seq; t += blockDim.x)
    {
        const float* qt = q + (((long)b * s.seq + t) * s.heads + h) * qd;
        long bht = ((long)b * s.heads + h) * s.seq + t;
        float p = expf(dss_mla_score(qt, kvb, kpe, s, b, h, j) - lse[bht]);
        const float* dot_row = d_out + (((long)b * s.seq + t) * s.heads + h) * s.dv;
        float dp = 0.0f;
        for (int d = 0; d < s.dv; d++) dp += dot_row[d] * v[d];
        p_col[t] = p;
        ds_col[t] = p * (dp - delta[bht]);
    }
    __syncthreads();
    float* dk = dkvb + (((long)b * s.seq + j) * s.heads + h) * kd;
    for (int d = threadIdx.x; d < kd; d += blockDim.x)
    {
        float acc = 0.0f;
        if (d < s.dn)
        {
            for (int t = j; t < s.seq; t++) acc += ds_col[t] * q[(((long)b * s.seq + t) * s.heads + h) * qd + d];
            dk[d] += s.scale * acc;
        }
        else
        {
            for (int t = j; t < s.seq; t++) acc += p_col[t] * d_out[(((long)b * s.seq + t) * s.heads + h) * s.dv + d - s.dn];
            dk[d] += acc;
        }
    }
    float* dkp = dkpe_partial + ((((long)b * s.heads + h) * s.seq) + j) * s.dr;
    for (int d = threadIdx.x; d < s.dr; d += blockDim.x)
    {
        float acc = 0.0f;
        for (int t = j; t < s.seq; t++) acc += ds_col[t] * q[(((long)b * s.seq + t) * s.heads + h) * qd + s.dn + d];
        dkp[d] = s.scale * acc;
    }
}

// dkpe[b, t, :] += Σ_h partial[b, h, t, :] (heads in order: deterministic).
extern "C" __global__ void mla_sum_heads(const float* partial, int batch, int heads, int seq, int dr, float* dkpe)
{
    long n = (long)batch * seq * dr;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        long b = i / ((long)seq * dr), rest = i % ((long)seq * dr);
        float acc = 0.0f;
        for (int h = 0; h < heads; h++) acc += partial[(b * heads + h) * seq * dr + rest];
        dkpe[i] += acc;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Conversions for the BF16 and FP8 GEMM paths.
// ---------------------------------------------------------------------------------------------------------------

// Round to nearest even, NaN kept quiet (as NumericFormats.RoundToBf16).
extern "C" __global__ void f32_to_bf16(const float* x, u16* y, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        u32 u = __float_as_uint(x[i]);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) { y[i] = (u16)((u >> 16) | 0x40u); continue; }
        y[i] = (u16)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }
}

extern "C" __global__ void bf16_to_f32(const u16* x, float* y, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = __uint_as_float((u32)x[i] << 16);
}

// dst[c · ld_dst + r] = src[r · cols + c] for a rows × cols fp32 matrix (ld_dst ≥ rows): scale tensors into the
// "outer-dimension-major" layout cuBLASLt's block-scaled FP8 modes read.
extern "C" __global__ void transpose_f32(const float* src, int rows, int cols, float* dst, int ld_dst)
{
    long n = (long)rows * cols;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        long r = i / cols, c = i % cols;
        dst[c * ld_dst + r] = src[i];
    }
}

// y[i] = x[i] · scale + y[i] · beta (beta = 0 never reads y): the fp32 epilogue of a GEMM computed in another type.
extern "C" __global__ void axpby_f32(const float* x, float scale, float* y, float beta, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = beta == 0.0f ? x[i] * scale : x[i] * scale + y[i] * beta;
}
