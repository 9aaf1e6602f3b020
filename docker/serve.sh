#!/bin/bash
# The container's main process (under tini): TorchServe in the foreground, stopped cleanly on SIGTERM.
#
# `torchserve --start --foreground` is a Python launcher that starts the Java frontend and waits for
# it, but it neither forwards signals nor returns the frontend's exit status. So this script forwards
# SIGTERM/SIGINT to the frontend itself (its pid is in $TMPDIR/.model_server.pid, where the launcher
# writes it), which shuts its workers down, and exits non-zero when TorchServe died without being
# asked to: the container ends and its restart policy applies.
set -uo pipefail

config="${TS_CONFIG:-/home/model-server/config.properties}"
pid_file="${TMPDIR:-/tmp}/.model_server.pid"
rm -f "$pid_file"  # a restarted container keeps /tmp: never signal a stale pid

torchserve --start --foreground --ncs --disable-token-auth --ts-config "$config" "$@" &
launcher=$!

stopping=0
stop() {
  stopping=1
  frontend="$(cat "$pid_file" 2>/dev/null || true)"
  if [ -n "$frontend" ] && kill -TERM "$frontend" 2>/dev/null; then
    echo "gru-encoder-serve: SIGTERM sent to TorchServe (pid $frontend)"
  else
    kill -TERM "$launcher" 2>/dev/null || true
  fi
}
trap stop TERM INT

# `wait` returns early when a trapped signal arrives: keep waiting until the launcher is gone.
while kill -0 "$launcher" 2>/dev/null; do
  wait "$launcher"
done
if [ "$stopping" = 1 ]; then
  echo "gru-encoder-serve: TorchServe stopped"
  exit 0
fi
echo "gru-encoder-serve: TorchServe exited on its own" >&2
exit 1
