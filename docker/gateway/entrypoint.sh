#!/bin/bash
# The gateway's entrypoint: check the settings and API keys, render nginx's config into
# $GATEWAY_CONF_DIR (a tmpfs in compose), then exec nginx in the foreground (it is PID 1, as a
# non-root user). A key line that is not a key is skipped and named by its line; start is refused, with a
# message saying what to do, when no valid key is left: a gateway without keys would be an open door
# (GATEWAY_AUTH=off is for make serve's local gateway on 127.0.0.1 alone).
#
#   entrypoint.sh                 render, then run nginx
#   entrypoint.sh --reload        render again and reload the running nginx (new keys, no downtime:
#                                 docker compose exec gateway gateway-entrypoint --reload)
#   entrypoint.sh --check         render, then `nginx -t` (the config as nginx reads it)
#   entrypoint.sh --render-only   render and stop (the unit tests run this on the host)
#   entrypoint.sh --hold          hold the published socket (GATEWAY_LISTEN) for the gateways that share this
#                                 container's network (compose's gateway-port service; no keys, no nginx)
#
# API keys, one list from both sources (all of them valid at once, which is how keys are rotated):
#   GATEWAY_API_KEYS_FILE  one key per line; blank lines and lines starting with # are skipped
#                          (default /run/secrets/api_key, the compose secret)
#   GATEWAY_API_KEYS       keys separated by commas, spaces or newlines
# A key is at least 24 characters of A-Z a-z 0-9 _ - (base64url or hex: what
#   python3 -c 'import secrets; print(secrets.token_urlsafe(32))'   or   openssl rand -hex 32
# make). nginx's config only ever holds the keys in $GATEWAY_CONF_DIR/keys.map (mode 0600); the log
# shows a key's fingerprint (the first 12 hex digits of its sha256), never the key.
#
# Settings (defaults in brackets):
#   GATEWAY_MAX_BODY_SIZE   [2m]     largest request body (nginx size: 512k, 2m...) -> 413
#   GATEWAY_RATE            [50r/s]  requests per second (r/s) or minute (r/m) per API key -> 429
#   GATEWAY_BURST           [100]    requests over the rate let through at once before 429s
#   GATEWAY_PROXY_TIMEOUT   [60]     seconds to wait for TorchServe (its own default_response_timeout is 30)
#   GATEWAY_KEY_INFLIGHT    [2]      requests one API key may have in flight at once -> 429
#   GATEWAY_ADDRESS_INFLIGHT [256]   requests one client address may have in flight at once -> 429
#   GATEWAY_UPSTREAM        [torchserve:8080]   TorchServe's inference address
#   GATEWAY_RESOLVER_VALID  [0]      0: resolve GATEWAY_UPSTREAM's name once, at start (kept-alive
#                                    connections); a duration (2s, 500ms): look it up again once the
#                                    answer is that old, with the nameserver of /etc/resolv.conf, so
#                                    replicas that come and go are seen without a restart
#   GATEWAY_WORKERS         [auto]   nginx worker processes
#   GATEWAY_LISTEN          [8080]   the published port (address:port to bind one address)
#   GATEWAY_LISTEN_HOLDER   []       the name a --hold process hands GATEWAY_LISTEN's socket out under: nginx
#                                    takes that socket instead of binding its own, so a restart of this
#                                    container closes no port (listen_socket.py; docker-compose.yml's
#                                    gateway-port); empty: nginx binds GATEWAY_LISTEN itself
#   GATEWAY_STATUS_LISTEN   [8091]   nginx's stub_status for the metrics exporter (unix:/path for a socket)
#   GATEWAY_AUTH            [on]     off: no API key asked (make serve on 127.0.0.1); every caller is the key "local"
#   GATEWAY_RELEASE_FILE    [/etc/gateway/release/gateway.conf]  which version answers unpinned requests and
#                                    the canary (written beside versions.json by gru-encoder models); every line
#                                    is checked; missing: TorchServe's own default answers them
#   GATEWAY_RELEASE_POLL    [1]      seconds between two looks at GATEWAY_RELEASE_FILE; nginx reloads
#                                    (gracefully) when it changed; 0: read at start and --reload only
set -euo pipefail

MIN_KEY_LENGTH=24
CONF_DIR="${GATEWAY_CONF_DIR:-/tmp/gateway}"
TEMPLATE="${GATEWAY_TEMPLATE:-/etc/gateway/nginx.conf.template}"
KEYS_FILE="${GATEWAY_API_KEYS_FILE:-/run/secrets/api_key}"
RELEASE_FILE="${GATEWAY_RELEASE_FILE:-/etc/gateway/release/gateway.conf}"
# Every line a release file may hold: gru_encoder/api/release_conf.py's LINE (tests/unit/test_gateway.py checks
# that they are the same), so that the file can only ever choose versions, never add a directive.
RELEASE_LINE='^(#.*|map "" \$gw_(unpinned_version|release_generation|target_served) \{|split_clients "\$gw_caller" \$gw_unpinned_version \{|map \$gw_target_version \$gw_target_served \{|    ([0-9]{1,3}(\.[0-9]{1,2})?%|\*|default|"[0-9A-Za-z][0-9A-Za-z._-]{0,31}"|"") ("[0-9A-Za-z][0-9A-Za-z._-]{0,31}"|"");|\}|)$'
LISTEN_PATTERN='^(([0-9.]+|\[[0-9A-Fa-f:]+\]):)?[0-9]{1,5}$'
LISTEN_HINT='a port, or address:port like 127.0.0.1:8080'
HOLDER_PATTERN='^([A-Za-z0-9._-]{1,64})?$'
HOLDER_HINT='empty (nginx binds the port itself) or a name of letters, digits, . _ - (like gru-encoder-gateway)'
# Beside this script: gateway-listen-socket in the image, listen_socket.py in the repository (make serve, tests).
LISTEN_SOCKET="$(dirname "$0")/gateway-listen-socket"
[ -f "$LISTEN_SOCKET" ] || LISTEN_SOCKET="$(dirname "$0")/listen_socket.py"
NEW_KEY_HINT="make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

refuse() {
  echo "gateway: refusing to start: $*" >&2
  exit 1
}

# setting NAME DEFAULT REGEX HINT: the value of $NAME (or DEFAULT), refused unless it matches REGEX.
setting() {
  local value="${!1:-$2}"
  [[ "$value" =~ $3 ]] || refuse "$1='$value' is not valid: $4"
  printf '%s' "$value"
}

# size_bytes 2m -> 2097152 (nginx's units: none, k, m)
size_bytes() {
  local n="${1%[kKmM]}"
  case "$1" in
    *[kK]) echo $((n * 1024)) ;;
    *[mM]) echo $((n * 1024 * 1024)) ;;
    *) echo "$n" ;;
  esac
}

# Every valid key from both sources, one per line. A line that is not a key (too short, other
# characters) is skipped with a warning naming its source and line number, so that one bad line stops
# neither a start nor a --reload (a refused reload left the line in place, and the next start failed);
# start is refused only when no valid key remains. Never prints a key, valid or not.
collect_keys() {
  local -a keys=() sources=() valid=()
  local line n=0 i skipped=0
  if [ -e "$KEYS_FILE" ] || [ -n "${GATEWAY_API_KEYS_FILE:-}" ]; then
    [ -f "$KEYS_FILE" ] || refuse "the API key file $KEYS_FILE is missing or not a file: put one key per line in it ($NEW_KEY_HINT)"
    [ -r "$KEYS_FILE" ] || refuse "the API key file $KEYS_FILE is not readable by uid $(id -u): make it readable (chmod 0644, in a 0700 directory)"
    while IFS= read -r line || [ -n "$line" ]; do
      n=$((n + 1))
      line="${line%$'\r'}"
      line="${line#"${line%%[![:space:]]*}"}"   # trim leading whitespace
      line="${line%"${line##*[![:space:]]}"}"   # and trailing
      [ -z "$line" ] || [ "${line:0:1}" = "#" ] && continue
      keys+=("$line")
      sources+=("line $n of $KEYS_FILE")
    done <"$KEYS_FILE"
  fi
  n=0
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    n=$((n + 1))
    keys+=("$line")
    sources+=("key $n of GATEWAY_API_KEYS")
  done < <(printf '%s\n' "${GATEWAY_API_KEYS:-}" | tr ', \t\r' '\n\n\n\n')
  [ "${#keys[@]}" -gt 0 ] || refuse "no API key. Put one key per line in the secret file $KEYS_FILE" \
    "(compose mounts ./secrets/api_key there; make up writes one) or set GATEWAY_API_KEYS; $NEW_KEY_HINT"
  for i in "${!keys[@]}"; do
    if [ "${#keys[i]}" -lt "$MIN_KEY_LENGTH" ]; then
      echo "gateway: warning: skipping the API key at ${sources[i]}: it is ${#keys[i]} characters long; keys need at least $MIN_KEY_LENGTH" >&2
    elif ! [[ "${keys[i]}" =~ ^[A-Za-z0-9_-]+$ ]]; then
      echo "gateway: warning: skipping the API key at ${sources[i]}: it has characters other than A-Z a-z 0-9 _ -" >&2
    else
      valid+=("${keys[i]}")
      continue
    fi
    skipped=$((skipped + 1))
  done
  [ "${#valid[@]}" -gt 0 ] || refuse "none of the $skipped API key(s) is valid (each is named above): replace them" \
    "in $KEYS_FILE or GATEWAY_API_KEYS with keys of at least $MIN_KEY_LENGTH characters of A-Z a-z 0-9 _ -; $NEW_KEY_HINT"
  [ "$skipped" -eq 0 ] || echo "gateway: warning: $skipped API key(s) skipped (named above), ${#valid[@]} valid served;" \
    "fix or remove those lines, then gateway-entrypoint --reload ($NEW_KEY_HINT)" >&2
  printf '%s\n' "${valid[@]}" | sort -u
}

# The first nameserver of resolv.conf (Docker's 127.0.0.11, a cluster's DNS), as nginx's resolver
# wants it: an IPv6 address in brackets.
nameserver() {
  local file="${GATEWAY_RESOLV_CONF:-/etc/resolv.conf}" ns
  ns="$(awk '$1 == "nameserver" { print $2; exit }' "$file" 2>/dev/null || true)"
  [[ "$ns" =~ ^[0-9A-Fa-f.:]+$ ]] || refuse "GATEWAY_RESOLVER_VALID is set but $file names no nameserver to re-resolve GATEWAY_UPSTREAM with (set GATEWAY_RESOLVER_VALID=0 to resolve once at start)"
  [[ "$ns" == *:* ]] && ns="[$ns]"
  printf '%s' "$ns"
}

# upstream.conf: how nginx reaches TorchServe (see the template). Once: an upstream block with kept-alive
# connections. Re-resolved: a resolver and the name itself in $gw_torchserve.
render_upstream() {
  local upstream="$1" valid="$2" resolver="$3"
  if [ "$valid" = 0 ]; then
    printf 'upstream torchserve {\n    server %s max_fails=0;\n    keepalive 32;\n    keepalive_timeout 60s;\n}\nmap "" $gw_torchserve {\n    default torchserve;\n}\n' "$upstream"
  else
    printf 'resolver %s valid=%s;\nresolver_timeout 2s;\nmap "" $gw_torchserve {\n    default %s;\n}\n' "$resolver" "$valid" "$upstream"
  fi
}

# The workers' user: the image's nginx runs as uid 1001 and renders none. A master started as root (the
# local gateway of `make serve` in a root shell) would hand its workers to `nobody`, who cannot reach a
# conf dir under a private folder: they stay the caller's user, as the master is.
worker_user() {
  if [ "$(id -u)" = 0 ]; then printf 'user root root;  # the local gateway of a root shell'; else printf '# user: the caller (not root)'; fi
}

# render_release: $CONF_DIR/release.conf from the release file when every line of it is one a release may
# hold, else (missing, or a bad line: named) what nginx ran until now, else TorchServe's default for every
# unpinned request. Never refuses a start: serving the last good release beats not serving.
render_release() {
  local bad
  if [ -f "$RELEASE_FILE" ] && [ -r "$RELEASE_FILE" ]; then
    cp "$RELEASE_FILE" "$CONF_DIR/release.next"
    if bad="$(grep -Evxn -e "$RELEASE_LINE" "$CONF_DIR/release.next" | cut -d: -f1 | tr '\n' ' ')" && [ -n "$bad" ]; then
      echo "gateway: warning: $RELEASE_FILE has lines that are not a release's (line ${bad% }): ignored, the release stays as it was" >&2
      rm -f "$CONF_DIR/release.next"
    else
      mv "$CONF_DIR/release.next" "$CONF_DIR/release.conf"
      return 0
    fi
  fi
  [ -f "$CONF_DIR/release.conf" ] && return 0
  printf '# No release file (%s): unpinned requests go to TorchServe'"'"'s own default.\nmap "" $gw_unpinned_version {\n    default "";\n}\nmap "" $gw_target_served {\n    default "1";\n}\nmap "" $gw_release_generation {\n    default "0";\n}\n' "$RELEASE_FILE" >"$CONF_DIR/release.conf"
}

# watch_release PID: while nginx (PID) runs, look at the release file every GATEWAY_RELEASE_POLL seconds and
# reload nginx when it changed (nginx checks the new config first and keeps the old one when it is refused).
# A reload is graceful: requests in flight finish on the old workers, new connections get the new release.
watch_release() {
  local pid="$1" poll="$2"
  while sleep "$poll" && kill -0 "$pid" 2>/dev/null; do
    [ -f "$RELEASE_FILE" ] || continue
    cmp -s "$RELEASE_FILE" "$CONF_DIR/release.conf" && continue
    render_release
    if cmp -s "$RELEASE_FILE" "$CONF_DIR/release.conf"; then
      nginx -c "$CONF_DIR/nginx.conf" -e stderr -s reload &&
        echo "gateway: release $(grep -om1 'generation [0-9]*' "$CONF_DIR/release.conf" || echo '?') loaded from $RELEASE_FILE" >&2
    else
      sleep 5  # a refused file: said above; look again later, not every poll
    fi
  done
}

# watch_holder PID NAME: while nginx (PID) runs, check every 2 s that the holder of its socket still listens on
# NAME in this network (/proc/net/unix is the network namespace's). It is gone when gateway-port restarted:
# Docker then gave gateway-port a new network, and this container, still in the old one, is unreachable.
# nginx is stopped gracefully, so that the restart policy starts this container again, in the new network.
watch_holder() {
  local pid="$1" name="$2" status
  while sleep 2 && kill -0 "$pid" 2>/dev/null; do
    grep -q " @$name\$" /proc/net/unix && continue
    # /proc/net/unix is read in pages while sockets come and go, and can skip a line: ask the holder itself,
    # and stop only on its definite "nobody holds it" (not on any other failure, such as a fork refused).
    status=0
    python3 "$LISTEN_SOCKET" check "$name" >/dev/null 2>&1 || status=$?
    [ "$status" = 3 ] || continue
    echo "gateway: stopping: the holder of the published socket ($name) is gone, gateway-port restarted;" \
      "the restart policy starts this gateway again in gateway-port's new network" >&2
    kill -QUIT "$pid"
    return
  done
}

render() {
  local workers max_body rate burst timeout upstream key_inflight address_inflight resolver_valid resolver="" keys key fp
  local listen status_listen auth generated f
  workers="$(setting GATEWAY_WORKERS auto '^(auto|[1-9][0-9]?)$' 'auto or a number of processes')"
  max_body="$(setting GATEWAY_MAX_BODY_SIZE 2m '^[1-9][0-9]*[kKmM]?$' 'a size like 512k or 2m')"
  rate="$(setting GATEWAY_RATE 50r/s '^[1-9][0-9]*r/[sm]$' 'requests per second or minute, like 50r/s or 600r/m')"
  burst="$(setting GATEWAY_BURST 100 '^[0-9]+$' 'a number of requests, like 100')"
  timeout="$(setting GATEWAY_PROXY_TIMEOUT 60 '^[1-9][0-9]*$' 'seconds, like 60')"
  key_inflight="$(setting GATEWAY_KEY_INFLIGHT 2 '^[1-9][0-9]*$' 'a number of requests, like 2')"
  address_inflight="$(setting GATEWAY_ADDRESS_INFLIGHT 256 '^[1-9][0-9]*$' 'a number of requests, like 256')"
  upstream="$(setting GATEWAY_UPSTREAM torchserve:8080 '^[A-Za-z0-9._-]+:[0-9]+$' 'host:port, like torchserve:8080')"
  resolver_valid="$(setting GATEWAY_RESOLVER_VALID 0 '^(0|[1-9][0-9]*(ms|s|m)?)$' '0 (resolve once at start) or a duration like 2s or 500ms')"
  listen="$(setting GATEWAY_LISTEN 8080 "$LISTEN_PATTERN" "$LISTEN_HINT")"
  holder="$(setting GATEWAY_LISTEN_HOLDER '' "$HOLDER_PATTERN" "$HOLDER_HINT")"
  status_listen="$(setting GATEWAY_STATUS_LISTEN 8091 '^((([0-9.]+|\[[0-9A-Fa-f:]+\]):)?[0-9]{1,5}|unix:/[A-Za-z0-9._/-]+)$' 'a port, address:port or unix:/path')"
  auth="$(setting GATEWAY_AUTH on '^(on|off)$' 'on (an API key on every keyed route) or off (make serve on 127.0.0.1 only)')"
  release_poll="$(setting GATEWAY_RELEASE_POLL 1 '^(0|[0-9]+(\.[0-9]+)?)$' 'seconds, like 1 or 0.5 (0: no polling)')"
  [ "$resolver_valid" = 0 ] || resolver="$(nameserver)"
  [ "$timeout" -gt 30 ] || echo "gateway: warning: GATEWAY_PROXY_TIMEOUT=$timeout s is not longer than TorchServe's default_response_timeout (30 s): slow answers become 504s" >&2
  [ -r "$TEMPLATE" ] || refuse "no config template at $TEMPLATE"
  # The routes and error pages generated from the route table (gru_encoder/api/gateway_conf.py).
  generated="$(dirname "$TEMPLATE")/generated"
  [ -r "$generated/edge.conf" ] || refuse "no generated routes in $generated (make gateway-conf writes them)"
  [ "$auth" = off ] || keys="$(collect_keys)"

  mkdir -p "$CONF_DIR"
  (
    umask 077  # the key map: readable by this user only
    # Without keys (GATEWAY_AUTH=off) every caller is the key "local": the same routes, limits and answers.
    if [ "$auth" = off ]; then echo 'default "local";' >"$CONF_DIR/keys.map.tmp"; else echo 'default "";' >"$CONF_DIR/keys.map.tmp"; fi
    [ "$auth" = off ] || while IFS= read -r key; do
      fp="$(printf '%s' "$key" | sha256sum | cut -c1-12)"
      printf '"~^%s$" "%s";\n' "$key" "$fp" >>"$CONF_DIR/keys.map.tmp"
    done <<<"$keys"
    mv "$CONF_DIR/keys.map.tmp" "$CONF_DIR/keys.map"
  )
  render_upstream "$upstream" "$resolver_valid" "$resolver" >"$CONF_DIR/upstream.conf"
  # Connections per worker from the open-file limit nginx may raise itself to (the hard limit, which a
  # container takes from the Docker daemon: 1048576 under Docker's own service unit), at most 65536:
  # all but 1,024 descriptors (logs, listeners, spare), at most 32,768, so that a worker stops
  # accepting before it could run out of descriptors (docs/DEPLOY.md#the-published-port).
  local nofile connections
  nofile="$(ulimit -Hn)"
  { [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; } && nofile=65536
  connections=$((nofile - 1024 < 32768 ? nofile - 1024 : 32768))
  [ "$connections" -ge 1024 ] || refuse "the open-file limit is $nofile: nginx needs at least 2048 (docker run --ulimit nofile=65536, or raise the Docker daemon's LimitNOFILE)"
  sed -e "s|@@WORKERS@@|$workers|g" \
      -e "s|@@RLIMIT_NOFILE@@|$nofile|g" \
      -e "s|@@WORKER_CONNECTIONS@@|$connections|g" \
      -e "s|@@MAX_BODY_SIZE@@|$max_body|g" \
      -e "s|@@MAX_BODY_BYTES@@|$(size_bytes "$max_body")|g" \
      -e "s|@@RATE@@|$rate|g" \
      -e "s|@@BURST@@|$burst|g" \
      -e "s|@@PROXY_TIMEOUT@@|${timeout}s|g" \
      -e "s|@@EDGE_TIMEOUT@@|$((timeout + 5))s|g" \
      -e "s|@@KEY_INFLIGHT@@|$key_inflight|g" \
      -e "s|@@ADDRESS_INFLIGHT@@|$address_inflight|g" \
      -e "s|@@LISTEN@@|$listen|g" \
      -e "s|@@STATUS_LISTEN@@|$status_listen|g" \
      -e "s|@@CONF_DIR@@|$CONF_DIR|g" \
      -e "s|@@USER@@|$(worker_user)|g" \
      "$TEMPLATE" >"$CONF_DIR/nginx.conf"
  # The generated files take the same settings (their error bodies quote the limits).
  for f in "$generated"/*.conf; do
    sed -e "s|@@MAX_BODY_BYTES@@|$(size_bytes "$max_body")|g" -e "s|@@RATE@@|$rate|g" -e "s|@@BURST@@|$burst|g" \
        -e "s|@@PROXY_TIMEOUT@@|${timeout}s|g" -e "s|@@EDGE_TIMEOUT@@|$((timeout + 5))s|g" \
        -e "s|@@KEY_INFLIGHT@@|$key_inflight|g" -e "s|@@ADDRESS_INFLIGHT@@|$address_inflight|g" \
        "$f" >"$CONF_DIR/$(basename "$f")"
  done
  render_release
  if grep -q '@@[A-Z_]*@@' "$CONF_DIR"/*.conf; then
    refuse "unrendered settings left in $CONF_DIR: $(grep -oh '@@[A-Z_]*@@' "$CONF_DIR"/*.conf | sort -u | tr '\n' ' ')"
  fi
  echo "gateway: $([ "$auth" = off ] && echo "no API keys (GATEWAY_AUTH=off)" || echo "$(grep -c '^"' "$CONF_DIR/keys.map") API key(s) (fingerprints $(grep '^"' "$CONF_DIR/keys.map" | cut -d'"' -f4 | tr '\n' ' ' | sed 's/ $//'))"), listening on $listen$([ -z "$holder" ] || echo " (the socket held by $holder)")," \
    "body limit $max_body, rate $rate burst $burst and $key_inflight in flight per key, $address_inflight in flight per address," \
    "$connections connections per worker (open files $nofile), TorchServe at $upstream" \
    "($([ "$resolver_valid" = 0 ] && echo "resolved once" || echo "re-resolved every $resolver_valid via $resolver"), timeout ${timeout}s)" >&2
}

# --hold: no keys, no config, no nginx; the socket is bound here once and outlives every gateway restart.
if [ "${1:-}" = --hold ]; then
  listen="$(setting GATEWAY_LISTEN 8080 "$LISTEN_PATTERN" "$LISTEN_HINT")"
  holder="$(setting GATEWAY_LISTEN_HOLDER '' "$HOLDER_PATTERN" "$HOLDER_HINT")"
  [ -n "$holder" ] || refuse "--hold needs GATEWAY_LISTEN_HOLDER: the name the gateway asks for the socket under (the same in both services)"
  exec python3 "$LISTEN_SOCKET" hold "$listen" "$holder"
fi

render
case "${1:-}" in
  --render-only) exit 0 ;;
  --check) exec nginx -c "$CONF_DIR/nginx.conf" -e stderr -t ;;
  # A refused render has exited above, and the running nginx keeps its keys; nginx itself checks
  # the new config before it switches to it.
  --reload) exec nginx -c "$CONF_DIR/nginx.conf" -e stderr -s reload ;;
  "")
    # This shell's pid is nginx's master after the exec: the watcher stops with it.
    [ "$release_poll" = 0 ] || watch_release $$ "$release_poll" &
    # With a holder, nginx inherits the held socket (it logs "using inherited sockets"): while this
    # container restarts, connections wait in that socket's queue instead of being refused.
    if [ -n "$holder" ]; then
      watch_holder $$ "$holder" &
      exec python3 "$LISTEN_SOCKET" exec "$holder" -- nginx -c "$CONF_DIR/nginx.conf" -e stderr -g 'daemon off;'
    fi
    exec nginx -c "$CONF_DIR/nginx.conf" -e stderr -g 'daemon off;' ;;
  *) exec "$@" ;;
esac
