#!/usr/bin/env bash
# Make this machine able to build and run the compose stack (the tests in tests/e2e run this first):
# Docker Engine and Compose, a Docker daemon that answers, and the Dockerfiles' base image. A machine
# that has all three is left as it is; on a bare Debian machine (as root) it installs Debian's
# packages, starts dockerd and makes the base image.
#
#   scripts/docker-bootstrap.sh        # BASE_IMAGE=... for another base image (default debian:bookworm-slim)
#
# Before each step that changes the host it says on stderr what it is about to do and why. Its only
# line on stdout tells the caller whether it started a Docker daemon, printed as soon as that is
# known (so also when a later step fails):
#   STARTED_DOCKERD=<pid>   started here, in its own session: the caller stops it (SIGTERM) when done
#   STARTED_DOCKERD=        one was already answering: the caller leaves it alone
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
DOCKERD_LOG="${TMPDIR:-/tmp}/gru-encoder-dockerd.log"
NOFILE=1048576  # dockerd's open-file limit (the kernel's default fs.nr_open; Docker's unit: LimitNOFILE=infinity)
APT_LOG="${TMPDIR:-/tmp}/gru-encoder-apt.log"

say() { echo "docker-bootstrap: $*" >&2; }
fail() { echo "docker-bootstrap: FAILED: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
docker_answers() { timeout 20 docker info >/dev/null 2>&1; }
has_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; }

# apt_install WHY PACKAGE...: Debian's packages, as root; anyone else gets the command to run.
apt_install() {
  local why="$1"
  shift
  is_root || fail "missing $* ($why). As root, run: apt-get update && apt-get install -y $*"
  say "installing $* with apt-get from Debian's packages: $why (log: $APT_LOG)"
  { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@"; } \
    >"$APT_LOG" 2>&1 || { tail -20 "$APT_LOG" >&2; fail "apt-get install $* (the log's end is above)"; }
}

# ---- 1. tools: the engine and Compose (v2, the docker CLI plugin, or Debian bookworm's docker-compose 1.29)
need=()
command -v dockerd >/dev/null || need+=(docker.io)
has_compose || need+=(docker-compose)
[ "${#need[@]}" = 0 ] || apt_install "the tests build the images and run the stack with them" "${need[@]}"

# ---- 2. a Docker daemon
started=""
# start_dockerd [FLAGS...]: a daemon in its own session (setsid), so that a Ctrl-C aimed at the caller
# does not stop it before the caller has taken its stack down; status 0 once it answers. Its open-file
# limit is raised to NOFILE first (what Docker's systemd unit sets, LimitNOFILE): a daemon started from
# a shell inherits the shell's (20,000 here), and so does every docker-proxy it starts.
start_dockerd() {
  setsid bash -c 'ulimit -n "$0" 2>/dev/null || true; exec dockerd "$@"' "$NOFILE" "$@" </dev/null >"$DOCKERD_LOG" 2>&1 &
  local pid=$!
  for _ in $(seq 60); do
    if docker_answers; then started=$pid; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  tail -20 "$DOCKERD_LOG" >&2
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}
if ! docker_answers; then
  is_root || fail "no Docker daemon answers, and only root can start one here. As root, run: dockerd >$DOCKERD_LOG 2>&1 &  (or: systemctl start docker)"
  # With iptables where the host lets dockerd program it: Docker isolates `internal: true` networks
  # with iptables rules only. Else --iptables=false, as some sandboxes need: the bridges have no NAT
  # (builds then use the host's network: BUILD_NETWORK=host), published ports, the compose networks
  # and their DNS still work, and the isolation check says that it could not check.
  # --userland-proxy=false where iptables works: the kernel forwards the published port (DNAT), with
  # no docker-proxy process holding descriptors per connection, and remote callers reach nginx with
  # their own addresses (docs/DEPLOY.md#the-published-port). Without iptables, the proxy is the only
  # way a port is published.
  if iptables -t nat -S >/dev/null 2>&1 && iptables -t filter -S >/dev/null 2>&1; then
    say "starting dockerd with iptables and --userland-proxy=false, open files $NOFILE (log: $DOCKERD_LOG): no Docker daemon answers; iptables rules isolate the stack's internal network and forward its published port"
    if ! start_dockerd --userland-proxy=false; then
      say "starting dockerd --iptables=false instead: it did not start with iptables (the isolation check will say NOT CHECKED)"
      start_dockerd --iptables=false || fail "dockerd did not start (log: $DOCKERD_LOG)"
    fi
  else
    say "starting dockerd --iptables=false (log: $DOCKERD_LOG): no Docker daemon answers, and this host does not let dockerd program iptables (the isolation check will say NOT CHECKED)"
    start_dockerd --iptables=false || fail "dockerd did not start (log: $DOCKERD_LOG)"
  fi
fi
echo "STARTED_DOCKERD=$started"

# A daemon found running: its userland proxy and open-file limit (docs/DEPLOY.md#the-published-port).
# A low limit is raised (prlimit, as root): the docker-proxy of each port published from now on
# inherits it, and at ~6 descriptors per connection 20,000 let a flood of ~3,300 connections kill the
# proxy, and with it the published port, for good.
if [ -z "$started" ] && [ -r /var/run/docker.pid ]; then
  pid="$(cat /var/run/docker.pid)"
  limit="$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits" 2>/dev/null || true)"
  if [[ "$limit" =~ ^[0-9]+$ ]] && [ "$limit" -lt "$NOFILE" ] && is_root && command -v prlimit >/dev/null; then
    say "raising the running dockerd's (pid $pid) open-file limit from $limit to $NOFILE with prlimit: the docker-proxy of a published port inherits it, and a connection flood exhausted $limit"
    prlimit --pid "$pid" --nofile="$NOFILE:$NOFILE" 2>/dev/null \
      || say "could not raise it (this host withholds CAP_SYS_RESOURCE): a published port carries about $((limit / 6)) connections through docker-proxy; set LimitNOFILE in dockerd's service, or \"userland-proxy\": false (docs/DEPLOY.md#the-published-port)"
  fi
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--userland-proxy=false' \
     && ! grep -qs '"userland-proxy": *false' /etc/docker/daemon.json; then
    say "note: the running dockerd publishes ports through its userland proxy (docker-proxy): every caller reaches the gateway from one address; \"userland-proxy\": false in /etc/docker/daemon.json and a daemon restart make the kernel forward them (docs/DEPLOY.md#the-published-port)"
  fi
fi
docker version --format 'docker: client {{.Client.Version}}, engine {{.Server.Version}}' >&2

# ---- 3. the base image of every Dockerfile (docker/make-base-image.sh: a registry first, else debootstrap)
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null \
    || apt_install "it builds the base image $BASE_IMAGE where no registry has it" debootstrap
  say "making the base image $BASE_IMAGE with docker/make-base-image.sh: no local copy; it tries a registry, else debootstraps Debian bookworm (minutes)"
  docker/make-base-image.sh "$BASE_IMAGE" >&2 || fail "could not make the base image $BASE_IMAGE (see above)"
fi
