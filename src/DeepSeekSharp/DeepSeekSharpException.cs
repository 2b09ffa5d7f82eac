namespace DeepSeekSharp;

/// <summary>
/// An error the user can act on (bad file, bad argument, shape mismatch). The CLI prints its message as one line
/// and exits non-zero; anything else escaping is a bug.
/// </summary>
public class DeepSeekSharpException : Exception
{
    public DeepSeekSharpException(string message) : base(message) { }
    public DeepSeekSharpException(string message, Exception inner) : base(message, inner) { }
}
