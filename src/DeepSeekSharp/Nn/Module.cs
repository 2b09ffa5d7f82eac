using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Nn;

/// <summary>
/// A node of the model tree. Children, parameters and buffers are registered under the names the Hugging Face
/// checkpoints use, so <see cref="NamedParameters"/> yields exactly the HF weight names.
/// </summary>
public abstract class Module
{
    private readonly List<(string Name, Module Child)> _children = [];
    private readonly List<(string Name, Parameter Parameter)> _parameters = [];
    private readonly List<(string Name, Tensor Buffer)> _buffers = [];

    protected T Child<T>(string name, T module) where T : Module
    {
        _children.Add((name, module));
        return module;
    }

    protected Parameter Param(string name, Parameter p)
    {
        _parameters.Add((name, p));
        return p;
    }

    /// <summary>Registers state that is saved and loaded but never trained (e.g. the routing bias).</summary>
    protected Tensor Buffer(string name, Tensor t)
    {
        _buffers.Add((name, t));
        return t;
    }

    public IEnumerable<(string Name, Module Module)> Children => _children;

    /// <summary>Every parameter (trainable or frozen) with its full dotted name.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters(string prefix = "")
    {
        foreach (var (name, p) in _parameters) yield return (prefix + name, p);
        foreach (var (name, child) in _children)
            foreach (var item in child.NamedParameters(prefix + name + "."))
                yield return item;
    }

    public IEnumerable<(string Name, Tensor Buffer)> NamedBuffers(string prefix = "")
    {
        foreach (var (name, b) in _buffers) yield return (prefix + name, b);
        foreach (var (name, child) in _children)
            foreach (var item in child.NamedBuffers(prefix + name + "."))
                yield return item;
    }

    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "")
    {
        yield return (prefix.TrimEnd('.'), this);
        foreach (var (name, child) in _children)
            foreach (var item in child.NamedModules(prefix + name + "."))
                yield return item;
    }

    public void ZeroGrad()
    {
        foreach (var (_, p) in NamedParameters()) p.ZeroGrad();
    }
}

/// <summary>An indexed list of modules ("layers.0", "layers.1", ...).</summary>
public sealed class ModuleList<T> : Module where T : Module
{
    private readonly List<T> _items = [];

    public T Add(T module)
    {
        Child(_items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), module);
        _items.Add(module);
        return module;
    }

    public int Count => _items.Count;

    public T this[int i] => _items[i];
}
