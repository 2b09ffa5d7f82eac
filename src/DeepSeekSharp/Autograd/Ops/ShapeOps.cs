using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Autograd.Ops;

/// <summary>y = x[..., start : start+len] over the last dimension.</summary>
internal sealed class SliceLastOp : GradNode
{
    private readonly int _start;

    private SliceLastOp(Tensor x, int start) : base(false, x) { _start = start; }

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, int start, int len)
    {
        int d = x.Shape[^1];
        if (start < 0 || len < 0 || start + len > d) throw new ArgumentException($"slice [{start}, {start + len}) outside last dim {d}");
        int rows = OpBase.Rows(x);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = len;
        var y = Tensor.Empty(shape);
        var xs = x.Span; var ys = y.Span;
        for (int r = 0; r < rows; r++) xs.Slice(r * d + start, len).CopyTo(ys.Slice(r * len, len));
        return OpBase.Record(y, () => new SliceLastOp(x, start), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor x = Inputs[0];
        if (GradOf(x) is not { IsEmpty: false } dx) return;
        int d = x.Shape[^1], len = output.Shape[^1], rows = OpBase.Rows(x);
        for (int r = 0; r < rows; r++)
        {
            var target = dx.Slice(r * d + _start, len);
            TensorPrimitives.Add(target, dy.AsSpan(r * len, len), target);
        }
    }
}

/// <summary>y = [a ; b] over the last dimension.</summary>
internal sealed class ConcatLastOp : GradNode
{
    private ConcatLastOp(Tensor a, Tensor b) : base(a, b) { }

    public static Tensor Forward(Tensor a, Tensor b)
    {
        int da = a.Shape[^1], db = b.Shape[^1], rows = OpBase.Rows(a);
        if (OpBase.Rows(b) != rows) throw new ArgumentException($"concat: {a} and {b} have different row counts");
        var shape = (int[])a.Shape.Clone();
        shape[^1] = da + db;
        var y = Tensor.Empty(shape);
        var ys = y.Span; var sa = a.Span; var sb = b.Span;
        for (int r = 0; r < rows; r++)
        {
            sa.Slice(r * da, da).CopyTo(ys.Slice(r * (da + db), da));
            sb.Slice(r * db, db).CopyTo(ys.Slice(r * (da + db) + da, db));
        }
        return OpBase.Record(y, () => new ConcatLastOp(a, b), a, b);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        Tensor a = Inputs[0], b = Inputs[1];
        int da = a.Shape[^1], db = b.Shape[^1], rows = OpBase.Rows(a);
        Span<float> ga = GradOf(a), gb = GradOf(b);
        for (int r = 0; r < rows; r++)
        {
            if (!ga.IsEmpty) TensorPrimitives.Add(ga.Slice(r * da, da), dy.AsSpan(r * (da + db), da), ga.Slice(r * da, da));
            if (!gb.IsEmpty) TensorPrimitives.Add(gb.Slice(r * db, db), dy.AsSpan(r * (da + db) + da, db), gb.Slice(r * db, db));
        }
    }
}

/// <summary>The same values with a new shape (shares storage; gradients pass through).</summary>
internal sealed class ReshapeOp : GradNode
{
    private ReshapeOp(Tensor x) : base(x) { }

    public static Tensor Forward(Tensor x, int[] shape)
    {
        if (ShapeUtil.Numel(shape) != x.Length) throw new ArgumentException($"reshape {x} to {ShapeUtil.Format(shape)}");
        var y = new Tensor(shape, x.Data, x.Backend);
        x.ShareStorage();
        return OpBase.Record(y, () => new ReshapeOp(x), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        int n = checked((int)Inputs[0].Length);
        if (GradOf(Inputs[0]) is { IsEmpty: false } dx) TensorPrimitives.Add(dx, dy.AsSpan(0, n), dx);
    }
}

/// <summary>y[i] = x[rows[i]] (row gather, e.g. tokens routed to one expert). Backward scatter-adds.</summary>
internal sealed class GatherRowsOp : GradNode
{
    private readonly int[] _rows;

    private GatherRowsOp(Tensor x, int[] rows) : base(false, x) { _rows = rows; }

    public override bool ReadsOutput => false;

    public static Tensor Forward(Tensor x, int[] rows)
    {
        int d = x.Shape[^1], n = OpBase.Rows(x);
        var y = Tensor.Empty(rows.Length, d);
        var xs = x.Span; var ys = y.Span;
        for (int i = 0; i < rows.Length; i++)
        {
            if ((uint)rows[i] >= (uint)n) throw new ArgumentOutOfRangeException(nameof(rows), $"row {rows[i]} outside [0, {n})");
            xs.Slice(rows[i] * d, d).CopyTo(ys.Slice(i * d, d));
        }
        return OpBase.Record(y, () => new GatherRowsOp(x, rows), x);
    }

    public override void Backward(Tensor output, float[] dy)
    {
        if (GradOf(Inputs[0]) is not { IsEmpty: false } dx) return;
        int d = Inputs[0].Shape[^1];
        for (int i = 0; i < _rows.Length; i++)
        {
            var target = dx.Slice(_rows[i] * d, d);
            TensorPrimitives.Add(target, dy.AsSpan(i * d, d), target);
        }
    }
}

/// <summary>y[i] = W[ids[i]] (embedding lookup). Backward scatter-adds into W's rows.</summary>
internal sealed class EmbeddingOp : GradNode
{
    private readonly int[] _ids;

    private EmbeddingOp(Tensor w, int[] ids) : base(w) { _ids = ids; }

    public static Tensor Forward(Tensor w, int[] ids)
    {
        int v = w.Shape[0], d = w.Shape[1];
        var y = Tensor.Empty(ids.Length, d);
        var ws = w.Span; var ys = y.Span;
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)v) throw new DeepSeekSharpException($"token id {ids[i]} is outside the vocabulary [0, {v})");
            ws.Slice(ids[i] * d, d).CopyTo(ys.Slice(i * d, d));
        }
        return OpBase.Record(y, () => new EmbeddingOp(w, ids), w);
    }

    /// <summary>y[i] = widen(W[ids[i]]) for a frozen table kept compressed; records nothing.</summary>
    public static Tensor ForwardFrozen(CompressedWeight w, int[] ids)
    {
        int v = w.Rows, d = w.Cols;
        var y = Tensor.Empty(ids.Length, d);
        var ys = y.Span;
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)v) throw new DeepSeekSharpException($"token id {ids[i]} is outside the vocabulary [0, {v})");
            w.DecodeRow(ids[i], 0, ys.Slice(i * d, d));
        }
        return y;
    }

    public override void Backward(Tensor output, float[] dy)
    {
        if (GradOf(Inputs[0]) is not { IsEmpty: false } dw) return;
        int d = Inputs[0].Shape[1];
        for (int i = 0; i < _ids.Length; i++)
        {
            var target = dw.Slice(_ids[i] * d, d);
            TensorPrimitives.Add(target, dy.AsSpan(i * d, d), target);
        }
    }
}
