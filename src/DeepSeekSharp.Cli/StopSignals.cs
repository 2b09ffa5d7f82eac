using System.Runtime.InteropServices;

namespace DeepSeekSharp.Cli;

/// <summary>
/// SIGINT (Ctrl+C) and SIGTERM for the commands that stop gracefully (their actions take a CancellationToken):
/// the first signal cancels <see cref="Token"/> and the process keeps running until the command returns (a training
/// run saves its current step first); later signals only say that it is stopping, never abort the runtime. The exit
/// code is then 128 + the first signal's number (130, 143), the shell's convention for a process stopped by it.
/// </summary>
internal sealed class StopSignals : IDisposable
{
    // Never disposed: a handler may still run on the signal thread while the registrations are being disposed.
    private readonly CancellationTokenSource _stop = new();
    private readonly PosixSignalRegistration[] _registrations;
    private int _exitCode;

    public StopSignals()
    {
        _registrations = OperatingSystem.IsAndroid() || OperatingSystem.IsIOS() || OperatingSystem.IsTvOS() || OperatingSystem.IsBrowser()
            ? []
            : [PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal), PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal)];
    }

    public CancellationToken Token => _stop.Token;

    /// <summary>130 after SIGINT, 143 after SIGTERM (the first one received), null when none came.</summary>
    public int? ExitCode => Volatile.Read(ref _exitCode) is int code and > 0 ? code : null;

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        int code = context.Signal == PosixSignal.SIGINT ? 130 : 143;
        if (Interlocked.CompareExchange(ref _exitCode, code, 0) == 0) _stop.Cancel();
        else Console.Error.WriteLine("dss: already stopping (a checkpoint save in progress completes first)");
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
