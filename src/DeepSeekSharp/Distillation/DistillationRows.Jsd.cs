using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// <c>kd_beta</c> &gt; 0 (docs/distillation.md): the generalised Jensen-Shannon divergence of TRL's GKD between the tempered
/// teacher P and student Q over a row's categories (the vocabulary, or a bucket teacher's k ids and "every other id"),
/// with M = β·P + (1 − β)·Q:
///     β = 1: KL(Q ‖ P) (reverse KL);   0 &lt; β &lt; 1: β·KL(P ‖ M) + (1 − β)·KL(Q ‖ M).
/// With g_c = f·log(Q_c/M_c) (f = 1 − β, or 1 at β = 1, where M = P) the gradient by the student's tempered logits is
/// d/ds_j = q_j·(g_c(j) − Σ_c Q_c g_c), and Σ_c Q_c g_c = f·KL(Q ‖ M); dz = d/ds / τ, which klScale (∝ τ) carries.
/// </summary>
internal static partial class DistillationRows
{
    /// <summary>The divergence against a dense teacher row <paramref name="t"/> (overwritten); dz += klScale·d/ds.</summary>
    public static double DenseTeacherJsd(ReadOnlySpan<float> z, Span<float> t, in Student st, Scratch s, float beta, float klScale, Span<float> dz)
    {
        int v = z.Length;
        float tmax = TensorPrimitives.Max<float>(t);
        TensorPrimitives.Subtract(t, tmax, t);
        TensorPrimitives.Multiply(t, st.InvT, t);
        var p = s.Teacher.AsSpan(0, v);
        TensorPrimitives.Exp(t, p);
        double sumP = TensorPrimitives.Sum<float>(p);
        TensorPrimitives.Multiply(p, (float)(1 / sumP), p);                   // P
        TensorPrimitives.Subtract(t, (float)Math.Log(sumP), t);               // log P
        var te = st.TemperedExp;
        var lq = s.LogQ.AsSpan(0, v);
        TensorPrimitives.Subtract(z, st.Max, lq);
        TensorPrimitives.Multiply(lq, st.InvT, lq);
        TensorPrimitives.Subtract(lq, (float)Math.Log(st.SumT), lq);          // log Q
        var lm = s.LogM.AsSpan(0, v);
        if (beta == 1f) t.CopyTo(lm);
        else
        {
            TensorPrimitives.Multiply(p, beta, lm);
            TensorPrimitives.MultiplyAdd(te, (float)((1 - beta) / st.SumT), lm, lm);
            // Where both masses underflow, log M stays finite (its terms are 0·finite).
            TensorPrimitives.Max(lm, (float)MinMass, lm);
            TensorPrimitives.Log(lm, lm);                                     // log M
        }
        // Differences first, then the weighted sums: Σ Q log Q − Σ Q log M would cancel in float.
        double klPm = 0;
        if (beta != 1f)
        {
            TensorPrimitives.Subtract(t, lm, t);
            klPm = TensorPrimitives.Dot<float>(p, t);
        }
        TensorPrimitives.Subtract(lq, lm, lq);                                // log(Q/M)
        double klQm = TensorPrimitives.Dot<float>(te, lq) / st.SumT;
        if (!dz.IsEmpty)
        {
            double f = beta == 1f ? 1 : 1 - beta;
            TensorPrimitives.Subtract(lq, (float)klQm, lq);
            TensorPrimitives.Multiply(lq, te, lq);
            TensorPrimitives.MultiplyAdd(lq, (float)(klScale * f / st.SumT), dz, dz);
        }
        return beta == 1f ? klQm : beta * klPm + (1 - beta) * klQm;
    }

    /// <summary>
    /// The divergence against a top-k teacher row with the <see cref="TopKTail.Bucket"/> tail: k + 1 categories, the ids
    /// (which must be distinct; an id whose log-prob is −∞ is a category of teacher mass 0) and every other id.
    /// </summary>
    public static double BucketTeacherJsd(ReadOnlySpan<float> z, ReadOnlySpan<int> ids, ReadOnlySpan<float> logProbs,
        in Student st, Scratch s, float beta, float klScale, Span<float> dz)
    {
        int k = ids.Length;
        var a = s.Sparse.AsSpan(0, k + 1);
        double logNorm = TemperedTeacherCategories(ids, logProbs, st.InvT, bucket: true, a);

        // The student's mass outside the ids, summed directly (as the forward KL's bucket does).
        var te = st.TemperedExp;
        double outside = StudentMassOutside(ids, st, s);

        // Per category: log Q, log M and the two KL terms; a[c] becomes log(Q_c/M_c).
        double klPm = 0, klQm = 0;
        for (int c = 0; c <= k; c++)
        {
            if (c < k && ids[c] < 0) continue;
            double logP = a[c] - logNorm, p = Math.Exp(logP);
            double logQ = c < k ? st.LogQ(z[ids[c]]) : Math.Log(outside), q = Math.Exp(logQ);
            double logM = beta == 1f ? logP : Math.Log(Math.Max(beta * p + (1 - beta) * q, MinMass));
            if (beta == 1f) logM = Math.Max(logM, Math.Log(MinMass));
            if (p > 0) klPm += p * (logP - logM);
            klQm += q * (logQ - logM);
            a[c] = logQ - logM;
        }
        if (!dz.IsEmpty)
        {
            double f = beta == 1f ? 1 : 1 - beta;
            for (int i = 0; i < k; i++)
                if (ids[i] >= 0) dz[ids[i]] += (float)(klScale * f * Math.Exp(st.LogQ(z[ids[i]])) * (a[i] - klQm));
            TensorPrimitives.MultiplyAdd(te, (float)(klScale * f * (a[k] - klQm) / st.SumT), dz, dz);
        }
        for (int i = k - 1; i >= 0; i--)
            if (ids[i] >= 0) te[ids[i]] = s.Saved[i];
        return beta == 1f ? klQm : beta * klPm + (1 - beta) * klQm;
    }
}
