using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

internal static class OpBase
{
    /// <summary>Links <paramref name="output"/> to <paramref name="node"/> when recording and some input needs grad.</summary>
    public static Tensor Record(Tensor output, Func<GradNode> node, params Tensor[] inputs)
    {
        if (!GradMode.IsEnabled) return output;
        foreach (var t in inputs)
        {
            if (t.RequiresGrad)
            {
                output.GradFn = node();
                output.RequiresGrad = true;
                return output;
            }
        }
        return output;
    }

    public static void CheckLastDim(Tensor t, int d, string what)
    {
        if (t.Shape[^1] != d) throw new ArgumentException($"{what}: last dimension {t.Shape[^1]} != {d}");
    }

    public static int Rows(Tensor t) => checked((int)(t.Length / t.Shape[^1]));
}
