using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

internal static class OpBase
{
    /// <summary>Whether an op on these inputs is recorded: grad mode is on and some input needs a gradient. Ops that
    /// prepare state only for their backward (FP8 caches, precomputed gradients) ask this first.</summary>
    public static bool WillRecord(params Tensor[] inputs)
    {
        if (!GradMode.IsEnabled) return false;
        foreach (var t in inputs)
            if (t.RequiresGrad) return true;
        return false;
    }

    /// <summary>Links <paramref name="output"/> to <paramref name="node"/> when <see cref="WillRecord"/>.</summary>
    public static Tensor Record(Tensor output, Func<GradNode> node, params Tensor[] inputs)
    {
        if (!WillRecord(inputs)) return output;
        output.GradFn = node();
        output.RequiresGrad = true;
        return output;
    }

    /// <summary>Rows with a target (≥ 0; −1 = ignore), after checking every target lies inside the vocabulary [0, v).</summary>
    public static int CountTargets(int[] targets, int rows, int v)
    {
        if (targets.Length != rows) throw new ArgumentException($"cross entropy: {targets.Length} targets for {rows} rows");
        int count = 0;
        foreach (int t in targets)
        {
            if (t >= v) throw new DeepSeekSharpException($"target id {t} is outside the vocabulary [0, {v})");
            if (t >= 0) count++;
        }
        return count;
    }

    /// <summary>
    /// What a loss over <paramref name="count"/> counted rows divides by: the count itself (a mean) or the given
    /// <paramref name="divisor"/>; 0 when no row counts (the loss is then 0 with no gradient).
    /// </summary>
    public static int Divisor(int count, long? divisor)
    {
        if (count == 0 || divisor is null) return count;
        if (divisor < count || divisor > int.MaxValue) throw new ArgumentException($"a loss over {count} rows cannot be divided by {divisor}");
        return (int)divisor.Value;
    }

    public static void CheckLastDim(Tensor t, int d, string what)
    {
        if (t.Shape[^1] != d) throw new ArgumentException($"{what}: last dimension {t.Shape[^1]} != {d}");
    }

    public static int Rows(Tensor t) => checked((int)(t.Length / t.Shape[^1]));
}
