#!/usr/bin/env bash
# The deployment, for real: build the image, `docker compose up` the CPU variant, wait until healthy,
# send real predictions from the host and check them, check what is (not) published, kill TorchServe
# and watch the restart policy bring it back, run the Locust profile briefly, stop with SIGTERM, and
# tear everything down. Run by `make test` (tests/test_compose.py) and `make compose-test`.
#
# On a bare Debian machine (as root) it installs what it needs: docker.io, docker-compose and
# debootstrap from Debian; starts dockerd if none answers; and makes the debian:bookworm-slim base
# image with debootstrap when no registry has it. Bounded in time (COMPOSE_TEST_TIMEOUT, default
# 40 min) and cleans up after itself, also on failure or interruption. It keeps its images (the
# build cache) for the next run; COMPOSE_TEST_RMI=1 removes them too.
#
# Settings: COMPOSE_TEST_LOADTEST=0 skips the Locust step; TORCH_WHEEL_FILE is the CPU torch wheel
# to build with (default: the one in /opt/wheels, else PyTorch's CPU index); RUN_DIR serves an
# existing trained run instead of a fresh smoke training.
set -euo pipefail

if [ -z "${_COMPOSE_TEST_BOUNDED:-}" ]; then
  # Re-run under timeout: on expiry it gets SIGTERM (then SIGKILL 2 min later), and the trap below
  # still tears the stack down.
  export _COMPOSE_TEST_BOUNDED=1
  exec timeout --kill-after=120 "${COMPOSE_TEST_TIMEOUT:-2400}" "$0" "$@"
fi

cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="$ROOT/.venv/bin/python"
# Fixed names, distinct from a developer's own stack and images (gru-encoder:cpu / :cuda): a run
# first removes what a killed earlier run may have left, and never touches anything else.
PROJECT=gru-encoder-compose-test
export IMAGE=gru-encoder:compose-test LOCUST_IMAGE=gru-encoder-locust:compose-test
STORE_REL=model_store/.compose-test  # inside the build context (MAR) and mounted (MODEL_STORE)
STAGED=()  # files this run put into the build context (removed by the trap)
STARTED_DOCKERD=""
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gru-encoder-compose-test.XXXXXX")"
T0=$SECONDS

say() { printf '\n=== [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

compose() {
  "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml --profile loadtest "$@"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "${COMPOSE[*]:-}" ] && docker info >/dev/null 2>&1; then
    if [ "$rc" != 0 ]; then
      echo "--- last logs of the stack (exit status $rc) ---"
      timeout 60 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml --profile loadtest \
        logs --no-color --tail=60 2>&1 | tail -120
    fi
    say "tearing down"
    timeout 180 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml --profile loadtest \
      down --volumes --remove-orphans --timeout 30 2>&1 | tail -5
    if [ "${COMPOSE_TEST_RMI:-0}" = 1 ]; then
      docker image rm "$IMAGE" "$LOCUST_IMAGE" >/dev/null 2>&1
    fi
    # Each run's new archive leaves the previous run's image untagged: remove those (ours only).
    for title in gru-encoder gru-encoder-locust; do
      docker image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1
    done
  fi
  rm -rf "$WORK" "$ROOT/$STORE_REL"
  [ "${#STAGED[@]}" -gt 0 ] && rm -f "${STAGED[@]}"
  if [ -n "$STARTED_DOCKERD" ]; then
    echo "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
    kill -TERM "$STARTED_DOCKERD" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
  fi
  if [ "$rc" = 0 ]; then
    echo "compose test passed in $((SECONDS - T0)) s"
  else
    echo "compose test FAILED (exit status $rc) after $((SECONDS - T0)) s" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# ---- 1. tools
say "tools"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; } || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "missing ${need[*]}: install them (sudo apt-get install -y ${need[*]}) or run as root"
  echo "installing ${need[*]} with apt-get"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${need[@]}" >"$WORK/apt.log" 2>&1 \
    || { tail -20 "$WORK/apt.log" >&2; fail "apt-get install ${need[*]}"; }
fi
# Compose v2 (the docker CLI plugin) where there is one, else Debian bookworm's docker-compose 1.29:
# the compose files use only what both understand.
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
echo "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -1))"
[ -x "$PY" ] || fail "$PY not found: run make venv first"

# ---- 2. the Docker engine
say "docker engine"
if ! timeout 20 docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "no Docker daemon answers, and only root can start one here"
  # --iptables=false: these sandboxes (and CI) cannot program iptables. Consequences, checked on this
  # machine: the bridge has no NAT, so containers cannot reach outside and the build's RUN steps use
  # the host's network (BUILD_NETWORK=host); published ports still work (docker-proxy forwards
  # 127.0.0.1:PORT to the container), and so do the compose network and its DNS (the Locust
  # workers find locust-master, the master finds torchserve).
  echo "starting dockerd --iptables=false (log: ${TMPDIR:-/tmp}/gru-encoder-dockerd.log)"
  dockerd --iptables=false >"${TMPDIR:-/tmp}/gru-encoder-dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do timeout 5 docker info >/dev/null 2>&1 && break; sleep 1; done
  timeout 5 docker info >/dev/null 2>&1 || { tail -20 "${TMPDIR:-/tmp}/gru-encoder-dockerd.log" >&2; fail "dockerd did not start"; }
fi
docker version --format 'client {{.Client.Version}}, engine {{.Server.Version}}'
# Leftovers of a run that was killed before its trap could run.
compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true

# ---- 3. the base image
say "base image"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
docker/make-base-image.sh "$BASE_IMAGE"
export BASE_IMAGE

# ---- 4. the model archive: a smoke training (seconds), never the developer's model_store/gru_encoder.mar
say "model archive"
if [ -n "${RUN_DIR:-}" ]; then
  run_dir="$(cd "$RUN_DIR" && pwd)"
else
  run_dir="$WORK/run"
  timeout 600 "$PY" -m training.train --smoke --out-dir "$run_dir" >"$WORK/train.log" 2>&1 \
    || { tail -20 "$WORK/train.log" >&2; fail "smoke training"; }
  tail -2 "$WORK/train.log"
fi
rm -rf "${ROOT:?}/$STORE_REL"
timeout 300 "$PY" -m training.archive --run-dir "$run_dir" --export-path "$ROOT/$STORE_REL" | tail -1
# The container runs as an unprivileged user: the mounted store must be readable by all.
chmod -R a+rX "$ROOT/$STORE_REL"
export MODEL_STORE="./$STORE_REL" MAR="$STORE_REL/gru_encoder.mar"

# ---- 5. build (CPU torch). RUN steps use the host's network: see the dockerd note above.
say "build"
export BUILD_NETWORK=host
torch_pin="$(grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"' | cut -d= -f3)"
wheel="${TORCH_WHEEL_FILE:-$(ls /opt/wheels/torch-"$torch_pin"+cpu-cp311-*.whl 2>/dev/null | head -1 || true)}"
if [ -n "$wheel" ] && [ -f "$wheel" ]; then
  STAGED+=("$ROOT/docker/wheels/$(basename "$wheel")")
  ln -f "$wheel" "${STAGED[-1]}" 2>/dev/null || cp "$wheel" "${STAGED[-1]}"
  export TORCH_WHEEL="$(basename "$wheel")"
  echo "torch: the local wheel $wheel"
else
  echo "torch: $torch_pin from PyTorch's CPU index (no local wheel)"
fi
# pip in the build trusts what this machine trusts: its local certificate authorities (here, the
# egress proxy re-signs TLS with its own), staged for the build stages only.
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] || continue
  STAGED+=("$ROOT/docker/ca-certificates/$(basename "$crt")")
  cp "$crt" "${STAGED[-1]}"
  echo "build trusts the local certificate authority $crt"
done
build_services=(torchserve)
[ "${COMPOSE_TEST_LOADTEST:-1}" = 1 ] && build_services+=(locust-master)
timeout 1800 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml --profile loadtest \
  build "${build_services[@]}" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; fail "image build"; }
grep -E 'torch [0-9.]+.* cuda |Successfully tagged|naming to' "$WORK/build.log" || true
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(${IMAGE}|${LOCUST_IMAGE})  " || true

# ---- 6. up, on a free port of the host's loopback
say "up"
TS_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export TS_PORT TS_BIND=127.0.0.1
LOCUST_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export LOCUST_PORT
port_open() {  # port_open HOST PORT: does anything accept a TCP connection there?
  "$PY" -c 'import socket, sys; s = socket.socket(); s.settimeout(3); sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))) != 0)' "$1" "$2"
}
# A developer's `make serve` may hold 127.0.0.1:8081; note it so the check below stays fair.
mgmt_busy_before=0
port_open 127.0.0.1 8081 && mgmt_busy_before=1
timeout 300 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml up -d --no-build torchserve
cid="$(compose ps -q torchserve)"
[ -n "$cid" ] || fail "no torchserve container"

wait_healthy() {  # wait_healthy SECONDS: until the container's healthcheck (a real prediction) passes
  local deadline=$((SECONDS + $1)) health state
  while [ "$SECONDS" -lt "$deadline" ]; do
    health="$(docker inspect -f '{{.State.Health.Status}}' "$cid")"
    state="$(docker inspect -f '{{.State.Status}}' "$cid")"
    [ "$health" = healthy ] && return 0
    echo "  $((SECONDS - T0))s: $state, $health"
    sleep 5
  done
  fail "not healthy after $1 s"
}
t_up=$SECONDS
wait_healthy 300
echo "healthy $((SECONDS - t_up)) s after up"
docker inspect -f '{{json .State.Health.Log}}' "$cid" | "$PY" -c 'import json, sys; print("healthcheck:", json.load(sys.stdin)[-1]["Output"].strip())'

# ---- 7. real predictions from the host
say "predictions from the host (http://127.0.0.1:$TS_PORT)"
timeout 120 "$PY" scripts/compose_check.py --url "http://127.0.0.1:$TS_PORT" --run-dir "$run_dir"

# ---- 8. what is published, and what is not
say "ports"
published="$(docker port "$cid")"
echo "published: $published"
[ "$(echo "$published" | grep -c .)" = 1 ] && echo "$published" | grep -q "^8080/tcp -> 127.0.0.1:$TS_PORT$" \
  || fail "only 8080 should be published, on 127.0.0.1"
ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")"
port_open "$ip" 8080 || fail "inference not reachable on the container's address $ip:8080"
if [ "$mgmt_busy_before" = 0 ] && port_open 127.0.0.1 8081; then fail "management port 8081 reachable on the host"; fi
port_open "$ip" 8081 && fail "management port reachable from the host at the container's address $ip:8081"
echo "management 8081: not reachable from the host (not published; bound to the container's loopback)"
echo "from inside the container, the management API answers:"
compose exec -T torchserve python3 -c \
  'import urllib.request; print(" ", urllib.request.urlopen("http://127.0.0.1:8081/models", timeout=10).read().decode().replace("\n", " "))'
code="$(compose exec -T torchserve python3 -c \
  'import urllib.request, urllib.error
try: urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8081/models?url=x.mar", method="POST"), timeout=10)
except urllib.error.HTTPError as e: print(e.code)')"
echo "  POST /models (registration) -> $code"
[ "$code" = 405 ] || fail "model registration should be off (405), got $code"

# ---- 9. a dead TorchServe ends the container, and the restart policy brings it back
say "kill TorchServe inside the container"
compose exec -T torchserve sh -c 'kill -KILL "$(cat /tmp/.model_server.pid)"'
for _ in $(seq 60); do
  [ "$(docker inspect -f '{{.RestartCount}}' "$cid")" -ge 1 ] && break
  sleep 1
done
[ "$(docker inspect -f '{{.RestartCount}}' "$cid")" -ge 1 ] || fail "the container did not end and restart"
docker logs "$cid" 2>&1 | grep 'gru-encoder-serve: TorchServe exited on its own' \
  || fail "the container should have ended with status 1 when TorchServe died"
echo "the container ended (status 1) and was restarted by its policy: restart count $(docker inspect -f '{{.RestartCount}}' "$cid")"
t_up=$SECONDS
wait_healthy 300
echo "healthy again $((SECONDS - t_up)) s after the restart"
timeout 30 curl -fsS "http://127.0.0.1:$TS_PORT/predictions/gru_encoder" -H 'Content-Type: application/json' \
  -d '{"texts": ["he is tall"], "return": ["hidden"]}' | "$PY" -c 'import json, sys; print("after restart: shapes", json.load(sys.stdin)["shapes"])'

# ---- 10. the loadtest profile: Locust master + 2 workers against http://torchserve:8080, briefly
if [ "${COMPOSE_TEST_LOADTEST:-1}" = 1 ]; then
  say "loadtest profile: locust master + 2 workers, 15 s"
  # Generous thresholds: this checks the wiring (DNS, master/workers, the locustfile's own checks),
  # not the speed of a shared 2-core machine.
  export LOCUST_ARGS="--headless -u 4 -r 4 -t 15s --expect-workers 2 --max-p95-ms 10000 --only-summary"
  timeout 300 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml --profile loadtest \
    up -d --no-build --scale locust-worker=2 locust-master locust-worker
  master="$(compose ps -q locust-master)"
  rc="$(timeout 180 docker wait "$master")" || fail "locust master did not finish"
  compose logs --no-color locust-master | sed -n '/Response time percentiles\|Type  *Name/,$p' | tail -25
  [ "$rc" = 0 ] || fail "locust master exited with $rc"
  echo "locust master exit code 0"
fi

# ---- 11. SIGTERM stops TorchServe cleanly (exit 0, well before the 30 s grace period)
say "stop (SIGTERM)"
t_stop=$SECONDS
timeout 120 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml stop --timeout 30 torchserve
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$cid")"
echo "stopped in $((SECONDS - t_stop)) s, exit code $exit_code"
docker logs "$cid" 2>&1 | grep 'gru-encoder-serve:' | tail -2
[ "$exit_code" = 0 ] || fail "TorchServe should stop cleanly on SIGTERM (exit code $exit_code)"
