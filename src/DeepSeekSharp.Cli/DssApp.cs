using System.CommandLine;
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
        root.Subcommands.Add(TrainCommand.Create());
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
        // A generous termination timeout so a Ctrl+C during a checkpoint save can finish the save.
        var invocation = new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(60) };
        return BuildRoot().Parse(args).Invoke(invocation);
    }
}
