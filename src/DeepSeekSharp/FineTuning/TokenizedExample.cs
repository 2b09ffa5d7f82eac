namespace DeepSeekSharp.FineTuning;

/// <summary>
/// One tokenized fine-tuning example: the ids the model reads and, per position, the id it is trained to predict there
/// or <see cref="IgnoreIndex"/> where the position carries no loss (HF's convention: labels are aligned with the
/// inputs, the shift by one happens in the loss).
/// </summary>
public sealed record TokenizedExample(int[] InputIds, int[] Labels)
{
    /// <summary>The label of a position without loss (prompt, system turn, padding), as in HF and PyTorch.</summary>
    public const int IgnoreIndex = -100;

    /// <summary>How many positions carry loss.</summary>
    public int TrainedTokens
    {
        get
        {
            int count = 0;
            foreach (int label in Labels)
                if (label != IgnoreIndex) count++;
            return count;
        }
    }
}
