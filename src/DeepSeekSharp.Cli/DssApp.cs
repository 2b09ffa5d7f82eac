using System.CommandLine;
using System.CommandLine.Invocation;
using DeepSeekSharp.Cli.Commands;

namespace DeepSeekSharp.Cli;

/// <summary>The <c>dss</c> command tree; <see cref="Run"/> is what the executable calls (tests call it too).</summary>
public static class DssApp
{
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("dss: train, fine-tune and run DeepSeek-V3-architecture models on .NET");
        root.Subcommands.Add(InitCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(ForwardCommand.Create());
        root.Subcommands.Add(GradCommand.Create());
        root.Subcommands.Add(DistillCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(DataCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(MergeCommand.Create());
        root.Subcommands.Add(EsftCommand.Create());
        root.Subcommands.Add(RlCommand.Create());
        root.Subcommands.Add(ReportCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(TokenizeCommand.CreateGroup());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(ServeCommand.CreateChat());
        root.Subcommands.Add(ServeCommand.CreateServe());
        root.Subcommands.Add(Fp8Command.Create());
        root.Subcommands.Add(Fp8Command.Quantize());
        root.Subcommands.Add(Fp8Command.Dequantize());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(CudaCommand.Create());
        root.Subcommands.Add(MpiCommand.Create());
        return root;
    }

    public static int Run(string[] args)
    {
        var parse = BuildRoot().Parse(args);
        // System.CommandLine's own handler would force an exit code after a timeout while the command still runs
        // (mid-save) and throws on a second signal, so it is off: commands whose action takes a CancellationToken get
        // StopSignals, the others the default (the process ends at once, as after any signal).
        var invocation = new InvocationConfiguration { ProcessTerminationTimeout = null };
        if (parse.Action is not AsynchronousCommandLineAction) return parse.Invoke(invocation);
        using var stop = new StopSignals();
        int exitCode = parse.InvokeAsync(invocation, stop.Token).GetAwaiter().GetResult();
        return stop.ExitCode ?? exitCode;
    }
}
