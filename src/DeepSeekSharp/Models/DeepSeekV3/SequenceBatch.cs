namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>
/// The geometry of one forward call: B sequences of T tokens laid out row-major as B·T rows, and the rope
/// position of each row (0..T-1 per sequence for training).
/// </summary>
public sealed record SequenceBatch(int Batch, int SeqLen, int[] Positions)
{
    public int Tokens => Batch * SeqLen;

    public static SequenceBatch Training(int batch, int seqLen)
    {
        var positions = new int[batch * seqLen];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seqLen; t++) positions[b * seqLen + t] = t;
        return new SequenceBatch(batch, seqLen, positions);
    }
}
