namespace DeepSeekSharp.Distillation;

/// <summary>How the probability mass a top-k teacher row does not list is treated (docs/distillation.md).</summary>
public enum TopKTail
{
    /// <summary>The teacher's k probabilities are renormalised to sum to 1 and the KL runs over those k ids, the student's
    /// log-probabilities being its full-vocabulary log-softmax read at those ids (Axolotl's top-k KD; the tail is dropped).</summary>
    Renormalize,

    /// <summary>A (k+1)-th category: the teacher's left-over mass 1 − Σ p_k against the student's mass outside the k ids.</summary>
    Bucket,
}

/// <summary>
/// L = KlWeight · τ² · KL(p_T^τ ‖ p_S^τ) + CeWeight · CE(y, z_s), both summed over the trained rows and divided by their
/// count (or the global batch's). Axolotl's <c>kd_alpha</c> is <see cref="KlWeight"/> and <c>kd_ce_alpha</c> is
/// <see cref="CeWeight"/>; the textbook mix (training.md) is KlWeight = α, CeWeight = 1 − α, the default when
/// <c>kd_ce_alpha</c> is not given. <see cref="Beta"/> (Axolotl's and TRL's <c>kd_beta</c>) replaces the forward KL by
/// the generalised Jensen-Shannon divergence: 0 forward KL(P ‖ Q), 1 reverse KL(Q ‖ P), in between
/// β·KL(P ‖ M) + (1 − β)·KL(Q ‖ M) with M = β·P + (1 − β)·Q (still weighted by τ²).
/// </summary>
public sealed record DistillationLoss(float KlWeight, float CeWeight, float Temperature, TopKTail Tail = TopKTail.Renormalize, float Beta = 0f)
{
    /// <summary>The textbook mix α·τ²·KL + (1 − α)·CE.</summary>
    public static DistillationLoss Mix(float alpha, float temperature, TopKTail tail = TopKTail.Renormalize) =>
        new(alpha, 1f - alpha, temperature, tail);

    /// <summary>Throws a one-line error naming <paramref name="source"/> for weights or a temperature no loss can use.</summary>
    public void Validate(string source)
    {
        if (!float.IsFinite(Temperature) || Temperature <= 0) throw new DeepSeekSharpException($"{source}: kd_temperature must be > 0 (got {Temperature})");
        if (!float.IsFinite(KlWeight) || KlWeight < 0) throw new DeepSeekSharpException($"{source}: kd_alpha must be ≥ 0 (got {KlWeight})");
        if (!float.IsFinite(CeWeight) || CeWeight < 0) throw new DeepSeekSharpException($"{source}: kd_ce_alpha must be ≥ 0 (got {CeWeight})");
        if (!(Beta >= 0 && Beta <= 1)) throw new DeepSeekSharpException($"{source}: kd_beta must be in [0, 1] (got {Beta})");
    }
}
