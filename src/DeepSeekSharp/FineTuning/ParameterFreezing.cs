using System.Text.RegularExpressions;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.FineTuning;

/// <summary>What freezing did: the parameters left trainable and frozen, and the routing-bias buffers frozen with them.</summary>
public sealed record FreezeResult(int TrainableTensors, long TrainableElements, int FrozenTensors, long FrozenElements, IReadOnlySet<Tensor> FrozenBuffers)
{
    public string Summary => $"{TrainableElements:N0} trainable parameters in {TrainableTensors} tensors, {FrozenElements:N0} frozen in {FrozenTensors} "
        + $"({(double)FrozenElements / Math.Max(1, FrozenElements + TrainableElements):P1}){(FrozenBuffers.Count > 0 ? $"; {FrozenBuffers.Count} routing bias(es) frozen" : "")}";
}

/// <summary>
/// Axolotl's <c>unfrozen_parameters</c> (regexes over HF names: what matches trains, everything else is frozen) and its
/// inverse <c>frozen_parameters</c>. A regex matches anywhere in the name (Python's <c>re.search</c>, as Axolotl uses),
/// so <c>mlp\.experts\.</c> covers every expert and <c>^lm_head\.weight$</c> exactly one tensor. A frozen parameter has
/// RequiresGrad false: the backward forms no gradient for it (and skips its weight-gradient GEMM), AdamW keeps no
/// moments for it and the checkpoint's optimizer state has no entry. The routing biases (buffers, updated by the
/// balancing rule rather than by gradients) follow the same names: a bias whose name is frozen is not updated.
/// </summary>
public static class ParameterFreezing
{
    public static FreezeResult Apply(DeepSeekModel model, IReadOnlyList<string> unfrozen, IReadOnlyList<string> frozen)
    {
        if (unfrozen.Count > 0 && frozen.Count > 0) throw new DeepSeekSharpException("give unfrozen_parameters or frozen_parameters, not both");
        var patterns = (unfrozen.Count > 0 ? unfrozen : frozen).Select(p => new Regex(p, RegexOptions.CultureInvariant)).ToList();
        bool IsFrozen(string name)
        {
            if (patterns.Count == 0) return false;
            bool matched = patterns.Any(r => r.IsMatch(name));
            return unfrozen.Count > 0 ? !matched : matched;
        }
        int trainableTensors = 0, frozenTensors = 0;
        long trainable = 0, frozenElements = 0;
        var matchedPatterns = new HashSet<Regex>();
        foreach (var (name, p) in model.NamedParameters())
        {
            foreach (var r in patterns) if (r.IsMatch(name)) matchedPatterns.Add(r);
            if (IsFrozen(name))
            {
                p.RequiresGrad = false;
                p.Grad = null;
                frozenTensors++;
                frozenElements += p.Length;
            }
            else
            {
                trainableTensors++;
                trainable += p.Length;
            }
        }
        var frozenBuffers = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (name, buffer) in model.NamedBuffers())
        {
            foreach (var r in patterns) if (r.IsMatch(name)) matchedPatterns.Add(r);
            if (IsFrozen(name)) frozenBuffers.Add(buffer);
        }
        string key = unfrozen.Count > 0 ? "unfrozen_parameters" : "frozen_parameters";
        foreach (var r in patterns)
            if (!matchedPatterns.Contains(r))
                throw new DeepSeekSharpException($"{key}: '{r}' matches no parameter of the model (names look like {model.NamedParameters().Skip(3).First().Name})");
        if (trainableTensors == 0) throw new DeepSeekSharpException($"{key}: every parameter is frozen; nothing would train");
        return new FreezeResult(trainableTensors, trainable, frozenTensors, frozenElements, frozenBuffers);
    }
}
