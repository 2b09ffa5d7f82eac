using System.Runtime.CompilerServices;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests;

/// <summary>
/// The test run pools tensors of every size (production pools only large ones), so every op and every test goes
/// through recycled, longer-than-needed storage: an op that reads past a tensor's length or keeps a buffer it gave
/// back shows up here, not in a long training run.
/// </summary>
internal static class PoolEverything
{
    [ModuleInitializer]
    internal static void Initialize() => StoragePool.MinLength = 1;
}
