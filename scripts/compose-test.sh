#!/usr/bin/env bash
# The deployment, for real: build the images (TorchServe, the nginx gateway, Locust), check that the
# gateway refuses to start without a valid key, `docker compose up` the CPU variant with a test key
# file, wait until healthy, send real requests through the gateway from the host and check them (the
# predictions, the key, the body size and rate limits, the routes, JSON errors), check what is (not)
# published and reachable (the internal network, the management port, non-root users), kill
# TorchServe and watch the gateway answer JSON until the restart policy brings it back, run the
# Locust profile briefly, stop both services, and tear everything down. Run by `make test`
# (tests/test_compose.py) and `make compose-test`.
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
export IMAGE=gru-encoder:compose-test LOCUST_IMAGE=gru-encoder-locust:compose-test GATEWAY_IMAGE=gru-encoder-gateway:compose-test
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
      docker image rm "$IMAGE" "$LOCUST_IMAGE" "$GATEWAY_IMAGE" >/dev/null 2>&1
    fi
    # Each run's new archive leaves the previous run's image untagged: remove those (ours only).
    for title in gru-encoder gru-encoder-locust gru-encoder-gateway; do
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
start_dockerd() {  # start_dockerd [FLAGS...]: a daemon for this run; status 0 once it answers
  echo "starting dockerd ${*:-(iptables on)} (log: ${TMPDIR:-/tmp}/gru-encoder-dockerd.log)"
  dockerd "$@" >"${TMPDIR:-/tmp}/gru-encoder-dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do timeout 5 docker info >/dev/null 2>&1 && return 0; sleep 1; done
  tail -20 "${TMPDIR:-/tmp}/gru-encoder-dockerd.log" >&2
  kill -TERM "$STARTED_DOCKERD" 2>/dev/null; wait "$STARTED_DOCKERD" 2>/dev/null; STARTED_DOCKERD=""
  return 1
}
if ! timeout 20 docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "no Docker daemon answers, and only root can start one here"
  # With iptables where the host lets dockerd program it: Docker isolates `internal: true` networks
  # with iptables rules only (without them the host routes between its bridges, and a container on
  # the edge network reaches TorchServe by address: checked on this machine). Else --iptables=false,
  # as some sandboxes need: the bridge has no NAT, so containers cannot reach outside and the build's
  # RUN steps use the host's network (BUILD_NETWORK=host, always set below); published ports still
  # work (docker-proxy), and so do the compose networks and their DNS; the isolation check below then
  # says that it could not check.
  if iptables -t nat -S >/dev/null 2>&1 && iptables -t filter -S >/dev/null 2>&1; then
    start_dockerd || { echo "dockerd with iptables did not start: trying --iptables=false"; start_dockerd --iptables=false; } \
      || fail "dockerd did not start"
  else
    start_dockerd --iptables=false || fail "dockerd did not start"
  fi
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
build_services=(torchserve gateway)
[ "${COMPOSE_TEST_LOADTEST:-1}" = 1 ] && build_services+=(locust-master)
timeout 1800 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml --profile loadtest \
  build "${build_services[@]}" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; fail "image build"; }
grep -E 'torch [0-9.]+.* cuda |Successfully tagged|naming to' "$WORK/build.log" || true
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(${IMAGE}|${LOCUST_IMAGE}|${GATEWAY_IMAGE})  " || true

# ---- 6. the gateway refuses to start without a usable key (its image alone, no network)
say "the gateway without a usable key"
refused() {  # refused WHAT [DOCKER RUN OPTIONS...]: the gateway must exit non-zero, saying why
  local what="$1" out rc=0
  shift
  out="$(timeout 60 docker run --rm --network none "$@" "$GATEWAY_IMAGE" 2>&1)" || rc=$?
  echo "$what -> exit code $rc: $out"
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "the gateway should refuse to start ($what)"
  echo "$out" | grep -q '^gateway: refusing to start: ' || fail "no clear message ($what)"
}
refused "no key"
refused "GATEWAY_API_KEYS=short-key" -e GATEWAY_API_KEYS=short-key
refused "a 44-character key with a quote in it" -e GATEWAY_API_KEYS='abcdefghijklmnopqrstu"vwxyzabcdefghijklmnopq'

# ---- 7. up: TorchServe on the internal network only, the gateway on a free port of the host's loopback
say "up"
# The test's keys, in a secret file as `make up` writes one (0700 folder, 0644 file): the first for the
# checks, the second spent on the rate limit, which is low here so that a 429 comes quickly.
mkdir -m 0700 "$WORK/secrets"
"$PY" -c 'import secrets; print("# compose test keys"); print(secrets.token_urlsafe(32)); print(secrets.token_urlsafe(32))' \
  >"$WORK/secrets/api_key"
chmod 0644 "$WORK/secrets/api_key"
API_KEY="$(sed -n 2p "$WORK/secrets/api_key")"
RATE_KEY="$(sed -n 3p "$WORK/secrets/api_key")"
export GATEWAY_API_KEY_FILE="$WORK/secrets/api_key" GATEWAY_API_KEYS="" GATEWAY_RATE=5r/s GATEWAY_BURST=10 \
  GATEWAY_MAX_BODY_SIZE=2m GATEWAY_PROXY_TIMEOUT=60
GATEWAY_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export GATEWAY_PORT GATEWAY_BIND=127.0.0.1
LOCUST_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export LOCUST_PORT
GW_URL="http://127.0.0.1:$GATEWAY_PORT"
echo "keys: $GATEWAY_API_KEY_FILE (2 keys); GATEWAY_RATE=$GATEWAY_RATE GATEWAY_BURST=$GATEWAY_BURST" \
  "GATEWAY_MAX_BODY_SIZE=$GATEWAY_MAX_BODY_SIZE GATEWAY_PROXY_TIMEOUT=$GATEWAY_PROXY_TIMEOUT"
port_open() {  # port_open HOST PORT: does anything accept a TCP connection there?
  "$PY" -c 'import socket, sys; s = socket.socket(); s.settimeout(3); sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))) != 0)' "$1" "$2"
}
# A developer's `make serve` may hold 127.0.0.1:8081; note it so the check below stays fair.
mgmt_busy_before=0
port_open 127.0.0.1 8081 && mgmt_busy_before=1
t_up=$SECONDS
# `up gateway` starts TorchServe, then the gateway once TorchServe is healthy (depends_on).
timeout 400 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml up -d --no-build gateway
cid="$(compose ps -q torchserve)"
gw="$(compose ps -q gateway)"
[ -n "$cid" ] && [ -n "$gw" ] || fail "no torchserve or no gateway container"

wait_healthy() {  # wait_healthy CONTAINER SECONDS: until its health check (a real prediction) passes
  local deadline=$((SECONDS + $2)) health state
  while [ "$SECONDS" -lt "$deadline" ]; do
    health="$(docker inspect -f '{{.State.Health.Status}}' "$1")"
    state="$(docker inspect -f '{{.State.Status}}' "$1")"
    [ "$health" = healthy ] && return 0
    echo "  $((SECONDS - T0))s: $(docker inspect -f '{{.Name}}' "$1"): $state, $health"
    sleep 5
  done
  fail "$(docker inspect -f '{{.Name}}' "$1") not healthy after $2 s"
}
wait_healthy "$cid" 300
wait_healthy "$gw" 120
echo "both healthy $((SECONDS - t_up)) s after up"
docker inspect -f '{{json .State.Health.Log}}' "$cid" | "$PY" -c 'import json, sys; print("torchserve healthcheck:", json.load(sys.stdin)[-1]["Output"].strip())'
echo "gateway healthcheck: curl $(docker inspect -f '{{join .Config.Healthcheck.Test " "}}' "$gw" | grep -o 'http://[^ ]*') -> exit code 0"
docker logs "$gw" 2>&1 | grep '^gateway: ' | sed 's/^/gateway log: /'

# ---- 8. real requests through the gateway, from the host
say "through the gateway, from the host ($GW_URL)"
timeout 300 "$PY" scripts/compose_check.py --url "$GW_URL" --run-dir "$run_dir" \
  --api-key "$API_KEY" --rate-key "$RATE_KEY" --max-body "$GATEWAY_MAX_BODY_SIZE"
# Key rotation: a third key added to the secret file in place, taken up by a reload, no restart.
NEW_KEY="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
code="$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/predictions/gru_encoder" -H "Authorization: Bearer $NEW_KEY" \
  -H 'Content-Type: application/json' -d '{"texts": ["he is tall"], "return": ["hidden"]}')"
[ "$code" = 401 ] || fail "a key not yet in the file should get 401, got $code"
echo "$NEW_KEY" >>"$WORK/secrets/api_key"
compose exec -T gateway gateway-entrypoint --reload 2>&1 | sed 's/^/reload: /'
sleep 1  # nginx's new workers take over
code="$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/predictions/gru_encoder" -H "Authorization: Bearer $NEW_KEY" \
  -H 'Content-Type: application/json' -d '{"texts": ["he is tall"], "return": ["hidden"]}')"
echo "rotation: a new key -> 401, appended to the secret file, gateway-entrypoint --reload -> $code (restart count $(docker inspect -f '{{.RestartCount}}' "$gw"))"
[ "$code" = 200 ] || fail "the new key should work after the reload, got $code"
echo "the gateway's access log names a key by its fingerprint, never the key itself:"
docker logs "$gw" 2>/dev/null | grep ' key=[0-9a-f]' | tail -2 | sed 's/^/  /'
if docker logs "$gw" 2>&1 | grep -qF -e "$API_KEY" -e "$RATE_KEY" -e "$NEW_KEY"; then fail "an API key appears in the gateway's log"; fi

# ---- 9. what is published and reachable, and what is not
say "ports, networks, users"
ts_published="$(docker port "$cid")"
[ -z "$ts_published" ] || fail "torchserve publishes ports: $ts_published"
echo "torchserve publishes: nothing"
published="$(docker port "$gw")"
echo "gateway publishes: $published"
[ "$(echo "$published" | grep -c .)" = 1 ] && echo "$published" | grep -q "^8080/tcp -> 127.0.0.1:$GATEWAY_PORT$" \
  || fail "the gateway should publish 8080 only, on 127.0.0.1"
internal_net="${PROJECT}_internal" edge_net="${PROJECT}_edge"
ts_nets="$(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}' "$cid" | xargs)"
gw_nets="$(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}' "$gw" | xargs)"
echo "torchserve networks: $ts_nets (internal: $(docker network inspect -f '{{.Internal}}' "$internal_net")); gateway networks: $gw_nets"
[ "$ts_nets" = "$internal_net" ] || fail "torchserve should be on $internal_net only"
[ "$(docker network inspect -f '{{.Internal}}' "$internal_net")" = true ] || fail "$internal_net should be internal"
ip="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$internal_net\").IPAddress}}" "$cid")"
# From the host: management is refused everywhere (it listens on its container's loopback).
if [ "$mgmt_busy_before" = 0 ] && port_open 127.0.0.1 8081; then fail "management port 8081 reachable on the host"; fi
port_open "$ip" 8081 && fail "management port reachable from the host at the container's address $ip:8081"
echo "from the host: 127.0.0.1:8081 and torchserve's $ip:8081 refuse connections"
# From the gateway's container, on the internal network: inference answers, management and gRPC do not.
compose exec -T gateway curl -sS -m 10 -o /dev/null -w 'from the gateway container: torchserve:8080/ping -> %{http_code}\n' \
  http://torchserve:8080/ping || fail "the gateway cannot reach torchserve:8080"
for port in 8081 7070 7071; do
  rc=0
  compose exec -T gateway curl -sS -m 10 -o /dev/null "http://torchserve:$port/models" 2>/dev/null || rc=$?
  [ "$rc" = 7 ] || fail "torchserve:$port from the gateway container: curl exit code $rc, expected 7 (refused)"
done
echo "from the gateway container: torchserve:8081 (management), :7070 and :7071 (gRPC) refuse connections"
# From a container on the edge network only (the gateway's outer side): the gateway, never TorchServe.
edge_probe="$(timeout 60 docker run --rm --network "$edge_net" --entrypoint bash "$GATEWAY_IMAGE" -c '
  curl -sS -m 10 -o /dev/null -w "gateway:8080/ping -> %{http_code}\n" http://gateway:8080/ping
  if getent hosts torchserve >/dev/null; then echo "the name torchserve resolves"; else echo "the name torchserve does not resolve"; fi
  for port in 8080 8081; do rc=0; curl -sS -m 5 -o /dev/null "http://$1:$port/" 2>/dev/null || rc=$?; echo "$1:$port -> curl exit code $rc"; done' _ "$ip")"
echo "$edge_probe" | sed "s/^/from a container on $edge_net only: /"
echo "$edge_probe" | grep -q '^gateway:8080/ping -> 200$' || fail "a container on the edge network should reach the gateway"
echo "$edge_probe" | grep -q '^the name torchserve does not resolve$' || fail "torchserve should not resolve on the edge network"
echo "$edge_probe" | grep -q ':8081 -> curl exit code 0$' && fail "management reachable from the edge network"
if echo "$edge_probe" | grep -q ':8080 -> curl exit code 0$'; then
  # Docker isolates internal networks with iptables rules; a daemon run with --iptables=false has none.
  netid="$(docker network inspect -f '{{.Id}}' "$internal_net")"
  if iptables -S DOCKER-ISOLATION-STAGE-1 2>/dev/null | grep -q -- "-o br-${netid:0:12} -j DROP"; then
    fail "torchserve reachable by address from the edge network despite Docker's isolation rules"
  fi
  echo "NOT CHECKED: torchserve is reachable by address from the edge network because this Docker daemon" \
    "runs without iptables (--iptables=false), and Docker isolates internal networks with iptables rules"
else
  echo "torchserve ($ip) is not reachable from the edge network: Docker isolates the internal network"
fi
# Both run every process as a non-root user; the gateway's root filesystem is read-only.
for c in "$cid" "$gw"; do
  name="$(docker inspect -f '{{.Name}}' "$c")"
  procs="$(docker top "$c" -eo pid,uid,comm | tail -n +2)"  # docker top wants the pid column
  uids="$(echo "$procs" | awk '{print $2}' | sort -u | xargs)"
  echo "$name: user $(docker inspect -f '{{.Config.User}}' "$c"), uid of every process: $uids ($(echo "$procs" | awk '{print $3}' | sort -u | xargs))"
  [ -n "$uids" ] && ! echo " $uids " | grep -q ' 0 ' || fail "$name runs a process as root"
done
[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$gw")" = true ] || fail "the gateway's root filesystem should be read-only"
rc=0
compose exec -T gateway touch /etc/nginx/x 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "the gateway could write to its root filesystem"
echo "gateway: read-only root filesystem (touch /etc/nginx/x fails), a tmpfs on /tmp"
echo "inside the torchserve container, the management API answers:"
compose exec -T torchserve python3 -c \
  'import urllib.request; print(" ", urllib.request.urlopen("http://127.0.0.1:8081/models", timeout=10).read().decode().replace("\n", " "))'
code="$(compose exec -T torchserve python3 -c \
  'import urllib.request, urllib.error
try: urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8081/models?url=x.mar", method="POST"), timeout=10)
except urllib.error.HTTPError as e: print(e.code)')"
echo "  POST /models (registration) -> $code"
[ "$code" = 405 ] || fail "model registration should be off (405), got $code"

# ---- 10. a dead TorchServe ends its container, and the restart policy brings it back; meanwhile the
# gateway answers JSON errors (unavailable, overloaded), then 200s again
say "kill TorchServe inside its container"
# The watcher sends a request every 0.25 s through the gateway; TorchServe is killed once it watches.
timeout 330 "$PY" scripts/compose_check.py --url "$GW_URL" --run-dir "$run_dir" --api-key "$API_KEY" --outage 300 \
  >"$WORK/outage.log" 2>&1 &
watcher=$!
for _ in $(seq 120); do grep -q '^watching$' "$WORK/outage.log" && break; kill -0 "$watcher" 2>/dev/null || break; sleep 0.5; done
grep -q '^watching$' "$WORK/outage.log" || { cat "$WORK/outage.log"; fail "the outage watcher did not start"; }
compose exec -T torchserve sh -c 'kill -KILL "$(cat /tmp/.model_server.pid)"'
rc=0; wait "$watcher" || rc=$?
echo "through the gateway, meanwhile (a request every 0.25 s):"
grep -v '^watching$' "$WORK/outage.log"
[ "$rc" = 0 ] || fail "the gateway's answers while TorchServe restarted (exit status $rc)"
[ "$(docker inspect -f '{{.RestartCount}}' "$cid")" -ge 1 ] || fail "the container did not end and restart"
docker logs "$cid" 2>&1 | grep 'gru-encoder-serve: TorchServe exited on its own' \
  || fail "the container should have ended with status 1 when TorchServe died"
echo "the container ended (status 1) and was restarted by its policy: restart count $(docker inspect -f '{{.RestartCount}}' "$cid")"
t_up=$SECONDS
wait_healthy "$cid" 300
wait_healthy "$gw" 120
echo "both healthy again $((SECONDS - t_up)) s later"
timeout 30 curl -fsS "$GW_URL/predictions/gru_encoder" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
  -d '{"texts": ["he is tall"], "return": ["hidden"]}' \
  | "$PY" -c 'import json, sys; print("after the restart, through the gateway: shapes", json.load(sys.stdin)["shapes"])'

# ---- 11. the loadtest profile: Locust master + 2 workers against http://torchserve:8080 on the
# internal network (not through the gateway: it measures the model server), briefly
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

# ---- 12. stop: the gateway (SIGQUIT: it finishes requests in flight), then TorchServe (SIGTERM);
# both exit 0, well within the 30 s grace period
say "stop (gateway: SIGQUIT, torchserve: SIGTERM)"
for service in gateway torchserve; do
  c="$(compose ps -q "$service")"
  t_stop=$SECONDS
  timeout 120 "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml stop --timeout 30 "$service"
  exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$c")"
  echo "$service stopped in $((SECONDS - t_stop)) s, exit code $exit_code"
  [ "$exit_code" = 0 ] || fail "$service should stop cleanly (exit code $exit_code)"
done
docker logs "$cid" 2>&1 | grep 'gru-encoder-serve:' | tail -2
