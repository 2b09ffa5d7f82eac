namespace DeepSeekSharp.FineTuning.Esft;

/// <summary>
/// ESFT's choice of experts (training.md, ESFT): per layer, the experts in descending score, each added while the
/// cumulative score of those already chosen is below p. So the set is the smallest prefix whose sum reaches p, the
/// boundary test is "sum ≥ p" in double precision, summed in selection order, and experts of equal score keep the
/// order the score file lists them in (ascending ids in both our files and the release's): exactly the release's
/// <c>generate_expert_config.py</c>, whose configs the tests reproduce byte for byte. Scores are used as they are (no
/// renormalisation), so gate scores that sum below 1 (V2-Lite's raw softmax weights) select more experts for a p.
/// </summary>
public static class ExpertSelection
{
    /// <param name="table">one method's scores (<see cref="ExpertScores.Of"/>); layers keep its order</param>
    /// <param name="p">the cumulative-score threshold, in (0, 1]</param>
    public static ExpertConfig Select(IReadOnlyList<LayerScores> table, double p, bool sharedExperts = false, bool nonExpertModules = false)
    {
        if (!(p > 0 && p <= 1)) throw new DeepSeekSharpException($"--p: must be in (0, 1] (got {p})");
        var layers = new List<KeyValuePair<int, int[]>>(table.Count);
        foreach (var layer in table)
        {
            // A stable sort on descending score: equal scores stay in file order, as Python's sorted(reverse=True) keeps them.
            var order = Enumerable.Range(0, layer.Scores.Length).OrderByDescending(j => layer.Scores[j]).ToArray();
            var chosen = new List<int>();
            double cumulative = 0;
            foreach (int j in order)
            {
                if (cumulative >= p) break;
                chosen.Add(layer.Experts[j]);
                cumulative += layer.Scores[j];
            }
            layers.Add(new(layer.Layer, [.. chosen]));
        }
        return new ExpertConfig(layers, sharedExperts, nonExpertModules);
    }
}
