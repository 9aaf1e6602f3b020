#!/usr/bin/env bash
# Hitless operations on the compose stack: TorchServe's two replicas (the services torchserve and
# torchserve-2) are touched one at a time, and the next only once the previous one's health check (a
# real prediction) has passed since it started, so one replica always answers. The gateway re-resolves
# `torchserve` (GATEWAY_RESOLVER_VALID, 2 s) and sends a prediction that failed at the connection to
# the other replica (docs/RELIABILITY.md#hitless-operations).
#
#   scripts/compose-roll.sh up COMPOSE...        # make up / make up-cpu: a stopped stack is started; a
#                                                # running one gets the current images and settings, each
#                                                # replica recreated in turn (only where something changed),
#                                                # then the other services (`up -d`)
#   scripts/compose-roll.sh restart COMPOSE...   # make rolling-restart: each replica restarted in turn
#
# COMPOSE is the compose command with its files, e.g. docker-compose -f docker-compose.yml -f
# docker-compose.cpu.yml (COMPOSE_PROJECT_NAME and the other settings come from the environment).
# ROLL_HEALTH_TIMEOUT: seconds a replica may take to pass its health check (default 300).
set -euo pipefail

REPLICAS=(torchserve torchserve-2)
TIMEOUT="${ROLL_HEALTH_TIMEOUT:-300}"
action="${1:-}"
shift || true
[[ "$action" =~ ^(up|restart)$ && "$#" -gt 0 ]] || { echo "usage: $0 up|restart COMPOSE [ARG...]" >&2; exit 2; }
compose=("$@")
say() { echo "compose-roll: $*" >&2; }

container_of() { "${compose[@]}" ps -q "$1" 2>/dev/null | head -1; }

# healthy_since_start CONTAINER: its health check has passed since the container last started (a
# restarted container keeps the health log of its previous run, "healthy" included).
healthy_since_start() {
  docker inspect "$1" 2>/dev/null | python3 -c '
import json, sys
from datetime import datetime
def t(s):  # Docker: RFC 3339 with nanoseconds; Python takes microseconds
    s = s.rstrip("Z").split("+")[0]
    head, _, frac = s.partition(".")
    return datetime.fromisoformat(head + "." + (frac + "000000")[:6])
state = json.load(sys.stdin)[0]["State"]
log = (state.get("Health") or {}).get("Log") or []
ok = state.get("Running") and any(e["ExitCode"] == 0 and t(e["Start"]) > t(state["StartedAt"]) for e in log)
sys.exit(0 if ok else 1)'
}

wait_healthy() {
  local service="$1" start=$SECONDS cid=""
  while :; do
    cid="$(container_of "$service")"
    if [ -n "$cid" ] && healthy_since_start "$cid"; then
      say "$service healthy after $((SECONDS - start)) s"
      return 0
    fi
    if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
      say "FAILED: $service not healthy within $TIMEOUT s; the other replicas were left as they are. Its log ends:"
      [ -z "$cid" ] || docker logs --tail 30 "$cid" >&2 || true
      return 1
    fi
    sleep 2
  done
}

running() {
  local service cid
  for service in "${REPLICAS[@]}"; do
    cid="$(container_of "$service")"
    [ -n "$cid" ] && [ "$(docker inspect --format '{{.State.Running}}' "$cid" 2>/dev/null)" = true ] && return 0
  done
  return 1
}

case "$action" in
  up)
    # The gateway mounts the store's release/ folder (docker-compose.yml): made here, as the caller, so that
    # Docker does not make it as root and `gru-encoder models` (run as the caller) can write the release file.
    mkdir -p "${MODEL_STORE:-./model_store}/release"
    if ! running; then
      say "no TorchServe replica running: starting the stack"
      exec "${compose[@]}" up -d
    fi
    # A replica that is not running is started first (nothing to disturb), then the running ones in turn.
    ordered=()
    for service in "${REPLICAS[@]}"; do
      cid="$(container_of "$service")"
      if [ -n "$cid" ] && [ "$(docker inspect --format '{{.State.Running}}' "$cid" 2>/dev/null)" = true ]; then
        ordered+=("$service")
      else
        ordered=("$service" "${ordered[@]}")
      fi
    done
    for service in "${ordered[@]}"; do
      say "$service: brought to the current image and settings (recreated only if they changed), the other replica serving"
      "${compose[@]}" up -d --no-deps "$service"
      wait_healthy "$service"
    done
    "${compose[@]}" up -d
    ;;
  restart)
    for service in "${REPLICAS[@]}"; do
      say "$service: restarting, the other replica serving"
      "${compose[@]}" restart "$service"
      wait_healthy "$service"
    done
    ;;
esac
