# Source it from the repository root: builds the CLI and sets DSS to a private copy of the build in runs/.bench-bin-NAME,
# so a rebuild of the tree during a (long) benchmark cannot swap assemblies under it. Usage: private_build NAME [REV]
# With REV (a commit, branch or tag) it builds that revision instead of the working tree, from a `git archive` of it in
# runs/.bench-src-NAME: a before/after comparison in one interleaved run.
private_build() {
  local name=$1 rev=${2:-} src=.
  if [ -n "$rev" ]; then
    src="runs/.bench-src-$name"
    rm -rf "$src" && mkdir -p "$src" && git archive "$rev" | tar -x -C "$src"
  fi
  dotnet build -c Release "$src/src/DeepSeekSharp.Cli" >/dev/null
  local bin="runs/.bench-bin-$name"
  rm -rf "$bin" && mkdir -p "$bin" && cp -r "$src/src/DeepSeekSharp.Cli/bin/Release/net10.0/." "$bin/"
  DSS="dotnet $bin/dss.dll"
}
