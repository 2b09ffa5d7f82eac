return DeepSeekSharp.Cli.DssApp.Run(args);
