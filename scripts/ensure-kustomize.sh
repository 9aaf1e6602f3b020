#!/usr/bin/env bash
# Prints the path of the kubectl that renders the Kubernetes manifests (`kubectl kustomize`): Debian
# bookworm's kubernetes-client (kubectl 1.20.2, kustomize v2.0.3), unpacked into .tools/ of this
# checkout so that every machine renders with the same kustomize, whatever kubectl it has on PATH.
# The package is fetched with `apt-get download` (no root needed once apt's lists are there; as root
# this runs `apt-get update` first when the package is unknown). Each step is announced on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="1.20.5+really1.20.2-1.1+deb12u1"
TOOLS=.tools/kubernetes-client
KUBECTL="$TOOLS/usr/bin/kubectl"
if [ -x "$KUBECTL" ] && [ "$(cat "$TOOLS/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "$PWD/$KUBECTL"
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "kustomize: no apt-get/dpkg-deb here. Install kubectl 1.20 (kustomize v2.0.3) and put it at $KUBECTL" >&2
  exit 1
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "kustomize: fetching Debian's kubernetes-client $VERSION (kubectl with kustomize v2.0.3) into $TOOLS/" >&2
if ! (cd "$work" && apt-get download -qq "kubernetes-client=$VERSION" >/dev/null 2>&1); then
  if [ "$(id -u)" != 0 ]; then
    echo "kustomize: apt-get download kubernetes-client=$VERSION failed; as root run: apt-get update" >&2
    exit 1
  fi
  echo "kustomize: running apt-get update first (as root)" >&2
  apt-get update -qq
  (cd "$work" && apt-get download -qq "kubernetes-client=$VERSION" >/dev/null 2>&1) || {
    echo "kustomize: apt-get download kubernetes-client=$VERSION failed after apt-get update (is this Debian bookworm?)" >&2
    exit 1
  }
fi
rm -rf "$TOOLS" && mkdir -p "$TOOLS"
dpkg-deb -x "$work"/kubernetes-client_*.deb "$TOOLS"
echo "$VERSION" >"$TOOLS/VERSION"
"$KUBECTL" version --client >/dev/null
echo "$PWD/$KUBECTL"
