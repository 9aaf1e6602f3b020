#!/usr/bin/env bash
# Build java/BatchFillAgent.java into a Java agent jar (default build/batch-fill-agent.jar). Needs a
# JDK 17 (javac, jar): make java installs one where it may and runs this; the Docker image builds it in a stage of
# its own and ships only the jar.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/batch-fill-agent.jar}"
if ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
  echo "javac/jar not found: the batch-fill agent needs a JDK 17 (Debian/Ubuntu: apt-get install -y openjdk-17-jdk-headless)" >&2
  exit 1
fi
classes="$(mktemp -d)"
trap 'rm -rf "$classes"' EXIT
# The agent uses the ASM copy inside java.base: exported to it at compile time here, at run time by
# the agent itself (Instrumentation.redefineModule).
javac -nowarn --add-exports java.base/jdk.internal.org.objectweb.asm=ALL-UNNAMED -d "$classes" java/BatchFillAgent.java
printf 'Premain-Class: gruencoder.torchserve.BatchFillAgent\n' > "$classes/MANIFEST.MF"
mkdir -p "$(dirname "$out")"
jar --create --file "$out.tmp" --manifest "$classes/MANIFEST.MF" -C "$classes" gruencoder
mv "$out.tmp" "$out"
echo "built $out"
