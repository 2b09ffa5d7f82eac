namespace DeepSeekSharp.Data;

/// <summary>
/// One training example. Pre-training documents have an empty <see cref="Prompt"/>; instruction and chat data put
/// the part the loss ignores (user turns) in <see cref="Prompt"/> and the part it trains on in <see cref="Completion"/>.
/// </summary>
public sealed record Document(string Prompt, string Completion)
{
    public string Text => Prompt + Completion;
}
