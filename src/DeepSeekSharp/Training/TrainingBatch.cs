using DeepSeekSharp.Models.DeepSeekV3;

namespace DeepSeekSharp.Training;

/// <summary>
/// One micro-batch: the input ids [B·T], their labels [B·T] (HF's convention: aligned with the inputs, −100 where a
/// position carries no loss; pre-training's labels are the tokens themselves) and the geometry (positions and the
/// documents that attend only within themselves).
/// </summary>
public sealed record TrainingBatch(int[] Tokens, int[] Labels, SequenceBatch Geometry)
{
    /// <summary>Positions whose label carries loss (the main head's targets are these, one row earlier).</summary>
    public int TrainedTokens
    {
        get
        {
            int count = 0;
            foreach (int label in Labels)
                if (label >= 0) count++;
            return count;
        }
    }
}

/// <summary>Where the trainer's micro-batches come from: pre-training token windows or fine-tuning examples.</summary>
public interface ITrainingBatches
{
    /// <summary>Micro-batch number <paramref name="index"/> of the run, a pure function of (data, seed, index), so a resume
    /// only needs the counter.</summary>
    TrainingBatch Train(long index);

    /// <summary>How many validation micro-batches there are.</summary>
    int ValidationBatches { get; }

    /// <summary>Validation micro-batch <paramref name="index"/> (in order).</summary>
    TrainingBatch Validation(int index);

    /// <summary>UTF-8 bytes per trained validation token (turns nats/token into bits/byte).</summary>
    double ValidationBytesPerToken { get; }

    /// <summary>One line for the log: what the data is and how it is batched.</summary>
    string Summary { get; }
}
