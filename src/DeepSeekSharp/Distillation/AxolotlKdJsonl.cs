using System.Text.Json;

namespace DeepSeekSharp.Distillation;

/// <summary>
/// Axolotl's KD datasets (the "v2" layout: per line the token ids of the sequence and, per teacher row, parallel lists
/// <c>target_token_ids</c> [rows][≤K] and <c>logprobs</c> [rows][≤K]) read into <see cref="KdSequence"/>. Only pre-tokenised
/// lines (<c>input_ids</c>, optional <c>labels</c> with −100 where no loss) are read: rendering <c>messages</c> through a
/// chat template is the fine-tuning data's job. Rows are placed as Axolotl places them: with R rows for T tokens, R ≥ T
/// drops row 0 (it describes a token no position predicts) and row j then belongs to position j; R &lt; T puts row j at
/// position T − R − 1 + j. Rows shorter than the longest are padded with empty slots (id −1).
/// </summary>
public static class AxolotlKdJsonl
{
    public static IEnumerable<KdSequence> Read(string path)
    {
        if (!File.Exists(path)) throw new DeepSeekSharpException($"{path}: no such file");
        int lineNo = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{path}: line {lineNo}";
            KdSequence seq;
            try
            {
                using var doc = JsonDocument.Parse(line);
                seq = Parse(doc.RootElement, where);
            }
            catch (JsonException e)
            {
                throw new DeepSeekSharpException($"{where}: {e.Message}");
            }
            yield return seq;
        }
    }

    private static KdSequence Parse(JsonElement root, string where)
    {
        int[] tokens = Ints(Field(root, "input_ids", where), where);
        int[]? labels = root.TryGetProperty("labels", out var l) ? Ints(l, where) : null;
        var idRows = Field(root, "target_token_ids", where).EnumerateArray().Select(r => r.ValueKind == JsonValueKind.Null ? [] : Ints(r, where)).ToList();
        var lpRows = Field(root, "logprobs", where).EnumerateArray().Select(r => r.ValueKind == JsonValueKind.Null ? [] : r.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToList();
        if (idRows.Count != lpRows.Count) throw new DeepSeekSharpException($"{where}: target_token_ids has {idRows.Count} rows but logprobs has {lpRows.Count}");
        int first = 0, position0;
        if (idRows.Count >= tokens.Length) (first, position0) = (1, 0);
        else position0 = tokens.Length - idRows.Count - 1;
        int k = idRows.Max(r => r.Length);
        if (k == 0) throw new DeepSeekSharpException($"{where}: no teacher row has any id");
        var positions = new List<int>();
        var ids = new List<int>();
        var lps = new List<float>();
        for (int j = first; j < idRows.Count; j++)
        {
            int p = position0 + j - first;
            if (p + 1 >= tokens.Length) break;
            if (idRows[j].Length != lpRows[j].Length) throw new DeepSeekSharpException($"{where}: row {j} has {idRows[j].Length} ids and {lpRows[j].Length} log-probs");
            if (idRows[j].Length == 0 || labels is not null && labels[p + 1] == -100) continue;
            positions.Add(p);
            for (int i = 0; i < k; i++)
            {
                ids.Add(i < idRows[j].Length ? idRows[j][i] : -1);
                lps.Add(i < idRows[j].Length ? lpRows[j][i] : float.NegativeInfinity);
            }
        }
        var seq = new KdSequence(tokens, [.. positions], [.. ids], [.. lps], k);
        seq.Validate(where);
        return seq;
    }

    private static JsonElement Field(JsonElement root, string name, string where) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array ? v : throw new DeepSeekSharpException($"{where}: no '{name}' list");

    private static int[] Ints(JsonElement e, string where) =>
        e.ValueKind == JsonValueKind.Array ? e.EnumerateArray().Select(x => x.GetInt32()).ToArray() : throw new DeepSeekSharpException($"{where}: expected a list of ids");
}
