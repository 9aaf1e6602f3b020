#!/usr/bin/env bash
# nginx: `make serve` runs the gateway's own configuration (docker/gateway) with the host's nginx in front
# of TorchServe, so that it serves the same public routes and errors as the deployed stack. Install
# Debian's nginx-light where we may, else say how.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "nginx not found: installing Debian's nginx-light (the local gateway of make serve)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  # The package's own site would start on port 80 with systemd; the gateway runs its own config.
  service nginx stop >/dev/null 2>&1 || true
else
  echo "nginx is required by make serve's local gateway: install it (Debian/Ubuntu: sudo apt-get install -y nginx-light)," >&2
  echo "or serve TorchServe alone: make serve SERVE_ARGS='--gateway off'" >&2
  exit 1
fi
