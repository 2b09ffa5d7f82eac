// A CPU emulation of the CUDA execution model, just enough to run src/DeepSeekSharp/Kernels/Cuda/Sources/kernels.cu
// on a machine without a GPU: the blocks of a launch run one after another, each with blockDim real threads, so
// __syncthreads is a barrier, __shared__ variables are shared by the block, and warp shuffles exchange through a
// block-wide buffer (kernels.cu calls them from every thread, as its header requires). Slow and exact: it tests the
// kernels' indexing and arithmetic, not their speed.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <thread>
#include <vector>

struct dim3 { unsigned x, y, z; };

static dim3 gridDim, blockDim;
static thread_local dim3 threadIdx, blockIdx;
static std::barrier<>* dss_emu_barrier;
static float dss_emu_exchange[1024];
static float dss_emu_dynamic_shared[1 << 22];

#define __global__
#define __device__ inline
#define __shared__ static
#define DSS_DYNAMIC_SHARED(type, name) type* name = dss_emu_dynamic_shared

inline void __syncthreads() { dss_emu_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset)
{
    unsigned t = threadIdx.x;
    dss_emu_exchange[t] = v;
    __syncthreads();
    float other = dss_emu_exchange[t ^ (unsigned)offset];
    __syncthreads();
    return other;
}

inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int min(int a, int b) { return a < b ? a : b; }

typedef void (*dss_emu_trampoline)(void**);

// Runs a kernel's grid: blockDim.x threads, started once per launch, walk the blocks together; a barrier after each
// block keeps them in step, so the block's shared variables are never touched by two blocks at once.
extern "C" int dss_emu_launch(dss_emu_trampoline kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
    unsigned shared_bytes, void** params)
{
    if ((size_t)shared_bytes > sizeof(dss_emu_dynamic_shared) || bx * by * bz > 1024 || by != 1 || bz != 1) return 1;
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    std::barrier<> barrier((std::ptrdiff_t)bx);
    dss_emu_barrier = &barrier;
    std::vector<std::thread> threads;
    threads.reserve(bx);
    for (unsigned t = 0; t < bx; t++)
        threads.emplace_back([=, &barrier] {
            threadIdx = {t, 0, 0};
            for (unsigned z = 0; z < gz; z++)
                for (unsigned y = 0; y < gy; y++)
                    for (unsigned x = 0; x < gx; x++)
                    {
                        // NaN-poison the dynamic shared memory: a kernel must write before it reads.
                        if (t == 0) std::memset(dss_emu_dynamic_shared, 0xFF, shared_bytes);
                        barrier.arrive_and_wait();
                        blockIdx = {x, y, z};
                        kernel(params);
                        barrier.arrive_and_wait();
                    }
        });
    for (auto& th : threads) th.join();
    return 0;
}

// The trampoline of one kernel: unpacks cuLaunchKernel-style parameters (an array of pointers to each value).
template <typename... A, std::size_t... I>
inline void dss_emu_call(void (*f)(A...), void** p, std::index_sequence<I...>) { f(*static_cast<std::remove_reference_t<A>*>(p[I])...); }

template <typename... A>
inline void dss_emu_call(void (*f)(A...), void** p) { dss_emu_call(f, p, std::index_sequence_for<A...>{}); }

#define DSS_EMU_EXPORT(name) extern "C" void dss_emu_##name(void** p) { dss_emu_call(name, p); }
