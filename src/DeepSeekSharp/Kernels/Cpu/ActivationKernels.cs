using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels.Cpu;

/// <summary>SwiGLU's gating: y = silu(a) ⊙ b, silu(a) = a·σ(a), σ(a) = 1 / (1 + e^−a); one pass, 16 lanes at a time.</summary>
internal static class ActivationKernels
{
    public static unsafe void SiluMul(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        int n = a.Length, i = 0;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* py = y)
        {
            for (; i + 16 <= n; i += 16)
            {
                var va = Vector512.Load(pa + i);
                var sig = Vector512<float>.One / (Vector512<float>.One + VectorExp.Exp(-va));
                (va * sig * Vector512.Load(pb + i)).Store(py + i);
            }
            for (; i < n; i++) py[i] = pa[i] / (1f + MathF.Exp(-pa[i])) * pb[i];
        }
    }

    /// <summary>
    /// da += dy·b·σ(a)(1 + a(1−σ(a))); db += dy·silu(a) (either may be empty); with <paramref name="accumulate"/> false
    /// the gradients are stored instead (da and db are then write-only).
    /// </summary>
    public static unsafe void SiluMulBackward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> dy, Span<float> da, Span<float> db,
        bool accumulate = true)
    {
        int n = a.Length, i = 0;
        bool wantA = !da.IsEmpty, wantB = !db.IsEmpty;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pdy = dy) fixed (float* pda = da) fixed (float* pdb = db)
        {
            for (; i + 16 <= n; i += 16)
            {
                var va = Vector512.Load(pa + i);
                var vdy = Vector512.Load(pdy + i);
                var sig = Vector512<float>.One / (Vector512<float>.One + VectorExp.Exp(-va));
                if (wantB)
                    (accumulate ? Vector512.FusedMultiplyAdd(va * sig, vdy, Vector512.Load(pdb + i)) : va * sig * vdy).Store(pdb + i);
                if (wantA)
                {
                    var slope = sig * Vector512.FusedMultiplyAdd(va, Vector512<float>.One - sig, Vector512<float>.One);
                    var ga = slope * Vector512.Load(pb + i);
                    (accumulate ? Vector512.FusedMultiplyAdd(ga, vdy, Vector512.Load(pda + i)) : ga * vdy).Store(pda + i);
                }
            }
            for (; i < n; i++)
            {
                float sig = 1f / (1f + MathF.Exp(-pa[i]));
                float gb = pa[i] * sig * pdy[i], ga = sig * (1f + pa[i] * (1f - sig)) * pb[i] * pdy[i];
                if (wantB) pdb[i] = accumulate ? pdb[i] + gb : gb;
                if (wantA) pda[i] = accumulate ? pda[i] + ga : ga;
            }
        }
    }
}
