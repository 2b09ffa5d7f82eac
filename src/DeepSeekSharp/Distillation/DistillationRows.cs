using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// One row of the distillation loss (docs/distillation.md). With s = z/τ the student's tempered logits and q = softmax(s),
/// d(τ²·KL(P ‖ q))/dz = τ·(q − P) wherever P is known; CE's gradient is softmax(z) − onehot(y). Each row therefore costs
/// two exp sweeps over the vocabulary (one when τ = 1) plus one for a dense teacher row, all through TensorPrimitives.
/// </summary>
internal static partial class DistillationRows
{
    /// <summary>A top-k teacher's tail or a student's outside-the-ids mass is never taken below this (log of 0).</summary>
    internal const double MinMass = 1e-30;

    /// <summary>2⁻²²: how much a float32 probability near 1 may be off after rounding its log; per listed id.</summary>
    internal const double TailNoisePerId = 1.0 / (1 << 22);

    /// <summary>Scratch of one worker: three vocabulary-long rows (five for kd_beta &gt; 0) and one (k+1)-long row.</summary>
    internal sealed class Scratch(int vocab, int k, bool jsd = false)
    {
        public readonly float[] Exp = new float[vocab];
        public readonly float[] TemperedExp = new float[vocab];
        public readonly float[] Teacher = new float[vocab];
        public readonly float[] LogQ = jsd ? new float[vocab] : [];
        public readonly float[] LogM = jsd ? new float[vocab] : [];
        public readonly double[] Sparse = new double[k + 1];
        public readonly float[] Saved = new float[k];
    }

    /// <summary>What the student side of a row leaves for the teacher side.</summary>
    internal readonly ref struct Student(Span<float> temperedExp, double sumT, float max, float invT)
    {
        /// <summary>exp((z − max)/τ) over the vocabulary (q = this / SumT).</summary>
        public readonly Span<float> TemperedExp = temperedExp;
        public readonly double SumT = sumT;
        public readonly float Max = max;
        public readonly float InvT = invT;

        /// <summary>log q_j = (z_j − max)/τ − log Σ.</summary>
        public double LogQ(float zj) => (zj - Max) * InvT - Math.Log(SumT);
    }

    /// <summary>
    /// CE of the row and the student's tempered exps; with <paramref name="dz"/> non-empty writes
    /// dz = ceScale·(softmax(z) − onehot(y)) + klScale·q.
    /// </summary>
    public static Student StudentSide(ReadOnlySpan<float> z, int y, float invT, Scratch s, float ceScale, float klScale, Span<float> dz, out double ce)
    {
        int v = z.Length;
        float max = TensorPrimitives.Max(z);
        var e = s.Exp.AsSpan(0, v);
        TensorPrimitives.Subtract(z, max, e);
        var te = invT == 1f ? e : s.TemperedExp.AsSpan(0, v);
        if (invT != 1f) TensorPrimitives.Multiply(e, invT, te);
        TensorPrimitives.Exp(e, e);
        if (invT != 1f) TensorPrimitives.Exp(te, te);
        double sumCe = TensorPrimitives.Sum<float>(e);
        double sumT = invT == 1f ? sumCe : TensorPrimitives.Sum<float>(te);
        ce = max + Math.Log(sumCe) - z[y];
        if (!dz.IsEmpty)
        {
            TensorPrimitives.Multiply(e, (float)(ceScale / sumCe), dz);
            TensorPrimitives.MultiplyAdd(te, (float)(klScale / sumT), dz, dz);
            dz[y] -= ceScale;
        }
        return new Student(te, sumT, max, invT);
    }

    /// <summary>KL(softmax(t/τ) ‖ q) of a dense teacher row <paramref name="t"/> (overwritten); dz −= klScale·P.</summary>
    public static double DenseTeacher(ReadOnlySpan<float> z, Span<float> t, in Student st, Scratch s, float klScale, Span<float> dz)
    {
        int v = z.Length;
        float tmax = TensorPrimitives.Max<float>(t);
        TensorPrimitives.Subtract(t, tmax, t);
        TensorPrimitives.Multiply(t, st.InvT, t);   // t' = (t − max)/τ; log P = t' − log ΣP
        var p = s.Teacher.AsSpan(0, v);
        TensorPrimitives.Exp(t, p);
        double sumP = TensorPrimitives.Sum<float>(p);
        // Σ P·(log P − log q) = Σ P t'/ΣP − log ΣP − (Σ P z/ΣP − max)/τ + log Σq
        double kl = TensorPrimitives.Dot<float>(p, t) / sumP - Math.Log(sumP)
            - (TensorPrimitives.Dot(p, z) / sumP - st.Max) * st.InvT + Math.Log(st.SumT);
        if (!dz.IsEmpty) TensorPrimitives.MultiplyAdd(p, (float)(-klScale / sumP), dz, dz);
        return kl;
    }

    /// <summary>
    /// The teacher's categories of a top-k row at temperature 1/<paramref name="invT"/>, unnormalised, into
    /// <paramref name="a"/> [k + 1]: logp/τ per listed id (−∞ for an empty slot), and with <paramref name="bucket"/>
    /// log(1 − Σ p)/τ for "every other id" (else −∞). Returns the log of their normaliser.
    /// </summary>
    private static double TemperedTeacherCategories(ReadOnlySpan<int> ids, ReadOnlySpan<float> logProbs, float invT, bool bucket, Span<double> a)
    {
        int k = ids.Length;
        double max = double.NegativeInfinity, listed = 0;
        for (int i = 0; i < k; i++)
        {
            bool empty = ids[i] < 0 || float.IsNegativeInfinity(logProbs[i]);
            a[i] = empty ? double.NegativeInfinity : logProbs[i] * (double)invT;
            if (!empty) listed += Math.Exp(logProbs[i]);
            max = Math.Max(max, a[i]);
        }
        // Below k float32 half-ulps of 1 the left-over mass is the rounding of the stored log-probs (k = V would
        // otherwise make a tail of noise that tempering amplifies): taken as 0.
        double tailMass = 1 - listed;
        if (tailMass <= k * TailNoisePerId) tailMass = 0;
        a[k] = bucket && tailMass > 0 ? Math.Log(tailMass) * invT : double.NegativeInfinity;
        max = Math.Max(max, a[k]);
        double sum = 0;
        foreach (double ai in a) sum += Math.Exp(ai - max);
        return max + Math.Log(sum);
    }

    /// <summary>
    /// The student's tempered mass outside the listed ids, summed directly (not 1 − Σ q_ids, which cancels when the ids
    /// hold nearly all), floored at <see cref="MinMass"/>. Leaves the ids' entries of the tempered exponentials zeroed,
    /// their values in <c>s.Saved</c> for the caller to restore.
    /// </summary>
    private static double StudentMassOutside(ReadOnlySpan<int> ids, in Student st, Scratch s)
    {
        var te = st.TemperedExp;
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] < 0) continue;
            s.Saved[i] = te[ids[i]];
            te[ids[i]] = 0;
        }
        return Math.Max(TensorPrimitives.Sum<float>(te) / st.SumT, MinMass);
    }

    /// <summary>
    /// KL against a top-k teacher row: <paramref name="ids"/> [K] (−1 = an empty slot) and their teacher log-probabilities at
    /// τ = 1, <paramref name="logProbs"/> [K]. The teacher at τ over the listed ids is softmax(logp/τ) (renormalised);
    /// <see cref="TopKTail.Bucket"/> adds the category "every other id" with teacher mass (1 − Σ exp(logp)) tempered the
    /// same way, against the student's q mass outside the ids (which must then be distinct).
    /// </summary>
    public static double SparseTeacher(ReadOnlySpan<float> z, ReadOnlySpan<int> ids, ReadOnlySpan<float> logProbs, TopKTail tail,
        in Student st, Scratch s, float klScale, Span<float> dz)
    {
        int k = ids.Length;
        var a = s.Sparse.AsSpan(0, k + 1);
        bool bucket = tail == TopKTail.Bucket;
        double logNorm = TemperedTeacherCategories(ids, logProbs, st.InvT, bucket, a);
        double kl = 0;
        for (int i = 0; i < k; i++)
        {
            if (double.IsNegativeInfinity(a[i])) continue;
            double logP = a[i] - logNorm, p = Math.Exp(logP);
            kl += p * (logP - st.LogQ(z[ids[i]]));
            if (!dz.IsEmpty) dz[ids[i]] -= (float)(klScale * p);
        }
        if (!bucket || double.IsNegativeInfinity(a[k])) return kl;

        // The student's mass outside the ids, summed directly (not 1 − Σ q_ids, which cancels when the ids hold nearly all).
        var te = st.TemperedExp;
        double outside = StudentMassOutside(ids, st, s);
        double logPr = a[k] - logNorm, pr = Math.Exp(logPr);
        kl += pr * (logPr - Math.Log(outside));
        if (!dz.IsEmpty)
        {
            // Outside the ids d/ds = q·(1 − P_r/Q_r): the klScale·q already in dz, less klScale·(P_r/Q_r)·q.
            TensorPrimitives.MultiplyAdd(te, (float)(-klScale * pr / outside / st.SumT), dz, dz);
        }
        for (int i = k - 1; i >= 0; i--)
            if (ids[i] >= 0) te[ids[i]] = s.Saved[i];
        return kl;
    }
}
