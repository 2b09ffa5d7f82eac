# Source it from the repository root: builds the CLI and sets DSS to a private copy of the build in runs/.bench-bin-NAME,
# so a rebuild of the tree during a (long) benchmark cannot swap assemblies under it. Usage: private_build NAME
private_build() {
  dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
  local bin="runs/.bench-bin-$1"
  rm -rf "$bin" && mkdir -p "$bin" && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0/. "$bin/"
  DSS="dotnet $bin/dss.dll"
}
