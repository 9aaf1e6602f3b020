#!/usr/bin/env bash
# The bench cross-checks locust with wrk (a small C load generator, Debian's package `wrk`). Install it
# where we may, else say how. The bench itself installs nothing.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "wrk not found: installing Debian's package wrk (the bench's low-overhead load generator)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
else
  echo "wrk is required by the bench: install it (Debian/Ubuntu: sudo apt-get install -y wrk)" >&2
  exit 1
fi
