using System.CommandLine;
using DeepSeekSharp.Cli.Commands;

var root = new RootCommand("dss: train, fine-tune and run DeepSeek-V3-architecture models on .NET");
root.Subcommands.Add(InitCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(ForwardCommand.Create());
root.Subcommands.Add(GradCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
var invocation = new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(60) };
return await root.Parse(args).InvokeAsync(invocation);
