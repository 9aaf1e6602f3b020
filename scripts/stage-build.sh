#!/usr/bin/env bash
# Run a Docker build command with this machine's build inputs staged into the build context, and
# remove what was staged when it ends, whatever happened (failure, Ctrl-C included):
#   - the machine's local certificate authorities (/usr/local/share/ca-certificates/*.crt) into
#     docker/ca-certificates/: the build stages' pip trusts what this machine trusts (a proxy that
#     re-signs TLS brings its own authority); the served images do not keep them
#   - with --cpu, a torch CPU wheel of the pinned version (TORCH_WHEEL_FILE, else
#     /opt/wheels/torch-<pin>+cpu-*.whl) into docker/wheels/, and TORCH_WHEEL set to its name: the
#     build installs it instead of downloading ~200 MB (no wheel there: PyTorch's CPU index, as before)
#   - BUILD_NETWORK=host unless set: the build's RUN steps reach the package registries the way this
#     machine does (its proxy, DNS and routes), also where the bridge has no route out
# Files already in those folders are the developer's: used, never removed. `make up`, `make up-cpu`
# and the compose test (tests/e2e) build through this script.
#
#   scripts/stage-build.sh [--cpu] COMMAND [ARG...]
#   scripts/stage-build.sh --cpu docker-compose -f docker-compose.yml -f docker-compose.cpu.yml build --force-rm
#
# Settings: STAGE_CA_DIR (default /usr/local/share/ca-certificates), STAGE_WHEEL_DIR (default
# /opt/wheels), TORCH_WHEEL_FILE, TORCH_WHEEL (a wheel already in docker/wheels/: nothing staged),
# BUILD_NETWORK. Exit status: COMMAND's.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=0
if [ "${1:-}" = --cpu ]; then cpu=1; shift; fi
[ "$#" -gt 0 ] || { echo "usage: $0 [--cpu] COMMAND [ARG...]" >&2; exit 2; }

CA_SOURCE="${STAGE_CA_DIR:-/usr/local/share/ca-certificates}"
WHEEL_SOURCE="${STAGE_WHEEL_DIR:-/opt/wheels}"
say() { echo "stage-build: $*" >&2; }

staged=()
unstage() {
  local path
  for path in "${staged[@]}"; do rm -f -- "$path"; done
  [ "${#staged[@]}" = 0 ] || say "removed the ${#staged[@]} file(s) staged for the build"
  staged=()
}
trap unstage EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The torch pin of pyproject.toml (the one every image and the venv use).
torch_pin() {
  grep -oE '"torch==[^"; ]+' pyproject.toml | head -1 | cut -d= -f3
}

for crt in "$CA_SOURCE"/*.crt; do
  [ -f "$crt" ] || continue
  target="docker/ca-certificates/$(basename "$crt")"
  [ -e "$target" ] && continue
  cp -- "$crt" "$target"
  staged+=("$target")
  say "staged $crt into docker/ca-certificates/: the build's pip trusts this machine's certificate authorities"
done

if [ "$cpu" = 1 ] && [ -z "${TORCH_WHEEL:-}" ]; then
  pin="$(torch_pin)"
  wheel="${TORCH_WHEEL_FILE:-}"
  if [ -z "$wheel" ]; then
    for candidate in "$WHEEL_SOURCE"/torch-"$pin"+cpu-*.whl; do
      [ -f "$candidate" ] && { wheel="$candidate"; break; }
    done
  fi
  if [ -n "$wheel" ]; then
    [ -f "$wheel" ] || { say "TORCH_WHEEL_FILE=$wheel: no such file (a torch CPU wheel, or unset for PyTorch's CPU index)"; exit 2; }
    target="docker/wheels/$(basename "$wheel")"
    if [ ! -e "$target" ]; then
      ln -- "$wheel" "$target" 2>/dev/null || cp -- "$wheel" "$target"  # a link: no second copy of ~200 MB
      staged+=("$target")
      say "staged $wheel into docker/wheels/: the build installs this machine's torch wheel"
    fi
    export TORCH_WHEEL="$(basename "$wheel")"
  else
    say "no torch $pin CPU wheel in $WHEEL_SOURCE: the build downloads it from PyTorch's CPU index"
  fi
fi

export BUILD_NETWORK="${BUILD_NETWORK:-host}"
say "running: $* (BUILD_NETWORK=$BUILD_NETWORK${TORCH_WHEEL:+ TORCH_WHEEL=$TORCH_WHEEL})"
status=0
"$@" || status=$?
exit "$status"
