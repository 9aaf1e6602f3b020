#!/usr/bin/env bash
# TorchServe's frontend needs Java 11+ (tested with 17). Install it where we may, else say how.
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Java not found: installing openjdk-17-jre-headless (TorchServe needs it)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
else
  echo "Java 17 is required by TorchServe: install it (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless)" >&2
  exit 1
fi
