#!/usr/bin/env bash
# A JDK 17: TorchServe's frontend runs on its Java, and javac builds the batch-fill agent
# (java/BatchFillAgent.java). Install it where we may, else say how.
set -euo pipefail
if command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 && command -v jar >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "JDK not found: installing openjdk-17-jdk-headless (TorchServe's Java, and javac for the batch-fill agent)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
else
  echo "A JDK 17 is required (TorchServe's Java, and javac for the batch-fill agent): install it (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jdk-headless)" >&2
  exit 1
fi
