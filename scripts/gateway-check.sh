#!/usr/bin/env bash
# The gateway as a client sees it: GET <url>/health from this host, through the published port (the
# path every caller takes). The containers' own health checks run inside them and cannot see that
# port: a published port that stopped forwarding leaves the gateway "healthy" while every client is
# refused. `make up` / `make up-cpu` wait with this until the stack answers; `make gateway-check` is one
# try, for a host's monitoring (cron, a systemd timer) to run.
#
#   scripts/gateway-check.sh [URL] [SECONDS]    # default http://127.0.0.1:8080, 0 s (one try)
#
# Exit 0 once /health answers 200 (the model answered a real prediction), printing how long it took;
# 1 when it did not within SECONDS, printing the last answer or connection error.
set -uo pipefail
url="${1:-http://127.0.0.1:8080}"
seconds="${2:-0}"
start=$SECONDS
last=""
while :; do
  out="$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$url/health" 2>&1)"
  if [ "$out" = 200 ]; then
    echo "gateway-check: $url/health answered 200 from this host after $((SECONDS - start)) s"
    exit 0
  fi
  last="$(printf %s "$out" | tr "\n" " ")"
  [ $((SECONDS - start)) -lt "$seconds" ] || break
  sleep 2
done
echo "gateway-check: FAILED: $url/health did not answer 200 from this host within $seconds s (last: $last)." \
  "Is the stack up (docker compose ps)? A healthy gateway that this check cannot reach means its published" \
  "port stopped forwarding: docs/DEPLOY.md#the-published-port" >&2
exit 1
