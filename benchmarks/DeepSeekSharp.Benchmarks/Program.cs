using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(DeepSeekSharp.Benchmarks.SgemmBenchmarks).Assembly).Run(args);
