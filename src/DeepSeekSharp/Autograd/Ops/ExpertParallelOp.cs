using DeepSeekSharp.Distributed;
using DeepSeekSharp.Models.DeepSeekV3;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>
/// The routed experts of an MoE layer split over an expert-parallel group (docs/parallelism.md §7). Forward: a counts
/// all-to-all tells every rank how many rows each source sends to each of its local experts; an all-to-all-v carries
/// the token rows (grouped by destination rank, then expert, then token: the single-process order); the owner runs
/// its experts as grouped GEMMs, one group per (source rank, local expert), so each group is exactly the rows one
/// process would give that expert for that micro-batch; the reverse all-to-all-v brings the outputs back in the
/// stacked order <see cref="MoeCombineOp"/> reads. Backward: output gradients travel the dispatch way, the experts'
/// sub-graph runs on the owner, input gradients come back the combine way and are summed per token in stacked order,
/// as <see cref="GroupedExpertsOp"/> sums them. Every rank of the group must run every MoE layer's forward and backward
/// together (each call is a collective).
/// </summary>
internal sealed class ExpertParallelOp : GradNode
{
    private readonly ExpertShard _shard;
    private readonly int[] _rowToken, _sendRows, _receiveRows;
    private readonly int _hidden;
    private Tensor? _received, _expertOutput;

    private ExpertParallelOp(Tensor x, ExpertShard shard, int[] rowToken, int[] sendRows, int[] receiveRows, int hidden, Tensor received, Tensor? expertOutput)
        : base(false, x)
    {
        (_shard, _rowToken, _sendRows, _receiveRows, _hidden, _received, _expertOutput) = (shard, rowToken, sendRows, receiveRows, hidden, received, expertOutput);
    }

    public override bool ReadsOutput => false;

    /// <param name="x">[N, H] the layer's input on this rank</param>
    /// <param name="rowToken">token of every stacked row, grouped by expert ([N·k])</param>
    /// <param name="offsets">[E + 1]: expert e owns stacked rows offsets[e]..offsets[e+1]</param>
    /// <returns>[N·k, H] the experts' outputs in stacked order</returns>
    public static Tensor Forward(Tensor x, int[] rowToken, int[] offsets, ExpertShard shard)
    {
        var group = shard.Group;
        int ranks = group.Size, local = shard.Count, hidden = x.Shape[^1], stackedRows = rowToken.Length;
        if (offsets.Length != ranks * local + 1) throw new ArgumentException($"expert parallel: {offsets.Length - 1} experts, expected {ranks} × {local}");
        // Rows per (destination rank, its local expert), then what every source sends here.
        var sendCounts = new int[ranks * local];
        for (int e = 0; e < sendCounts.Length; e++) sendCounts[e] = offsets[e + 1] - offsets[e];
        var receiveCounts = new int[ranks * local];
        group.AllToAll<int>(sendCounts, receiveCounts);
        int[] sendRows = new int[ranks], receiveRows = new int[ranks];
        var groupOffsets = new int[ranks * local + 1];                                     // (source, local expert) groups
        for (int r = 0; r < ranks; r++)
            for (int e = 0; e < local; e++)
            {
                sendRows[r] += sendCounts[r * local + e];
                receiveRows[r] += receiveCounts[r * local + e];
                groupOffsets[r * local + e + 1] = groupOffsets[r * local + e] + receiveCounts[r * local + e];
            }
        int receivedRows = groupOffsets[^1];

        float[] send = StoragePool.Rent(stackedRows * hidden);                               // x[rowToken] [S, H]
        var xs = x.Span;
        for (int r = 0; r < stackedRows; r++) xs.Slice(rowToken[r] * hidden, hidden).CopyTo(send.AsSpan(r * hidden, hidden));
        var received = Tensor.Empty(receivedRows, hidden);                                  // [R, H], source-major
        shard.Traffic.DispatchBytes += RowExchange.Exchange(group, shard.Dispatch, send, sendRows, received.Data, receiveRows, hidden);
        StoragePool.Return(send);

        bool grad = GradMode.IsEnabled;
        received.RequiresGrad = grad && x.RequiresGrad;
        Tensor? output = null;                                                               // [R, H]
        if (receivedRows > 0)
        {
            var identity = new int[receivedRows];
            for (int r = 0; r < receivedRows; r++) identity[r] = r;
            var (gate, up, down) = shard.SourceMajor();
            output = GroupedExpertsOp.Forward(received, identity, groupOffsets, gate, up, down);
        }
        var stacked = Tensor.Empty(stackedRows, hidden);                                   // [S, H]
        shard.Traffic.CombineBytes += RowExchange.Exchange(group, shard.Combine, output is null ? [] : output.Data, receiveRows, stacked.Data, sendRows, hidden);
        if (!grad) return stacked;
        // Recorded on every rank (even one whose experts got no rows): the backward's exchanges are collectives.
        stacked.GradFn = new ExpertParallelOp(x, shard, rowToken, sendRows, receiveRows, hidden, received, output);
        stacked.RequiresGrad = true;
        return stacked;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        var group = _shard.Group;
        int hidden = _hidden, stackedRows = _rowToken.Length;
        Tensor received = _received ?? throw new InvalidOperationException("expert parallel: backward ran twice");
        int receivedRows = received.Shape[0];
        _received = null;
        float[] dyReceived = StoragePool.Rent(receivedRows * hidden);                       // [R, H]
        _shard.Traffic.DispatchBytes += RowExchange.Exchange(group, _shard.Dispatch, dy, _sendRows, dyReceived, _receiveRows, hidden);
        float[]? dxReceived = null;
        if (_expertOutput is { GradFn: not null } expertOutput)
        {
            // −0 is the additive identity for every float (+0 is not: −0 + +0 = +0), so the grouped op's scatter-add
            // into these rows leaves each row's gradient with the bits it computed.
            if (received.RequiresGrad) received.Grad = StoragePool.Rent(receivedRows * hidden);
            received.Grad?.AsSpan(0, receivedRows * hidden).Fill(-0f);
            Backprop.BackwardFrom(expertOutput, dyReceived);                                 // takes dyReceived
            dxReceived = received.Grad;
            received.Grad = null;
        }
        else StoragePool.Return(dyReceived);
        _expertOutput = null;
        dxReceived ??= StoragePool.RentZeroed(receivedRows * hidden);
        float[] dxs = StoragePool.Rent(stackedRows * hidden);                               // [S, H] stacked order
        _shard.Traffic.CombineBytes += RowExchange.Exchange(group, _shard.Combine, dxReceived, _receiveRows, dxs, _sendRows, hidden);
        StoragePool.Return(dxReceived);
        Span<float> dx = GradOf(Inputs[0]);
        if (!dx.IsEmpty) ExpertRows.ScatterAdd(dx, dxs, _rowToken, 0, stackedRows, hidden);
        StoragePool.Return(dxs);
    }
}
