#!/usr/bin/env bash
# A steady caller for checking an operation by hand: a keyed prediction every INTERVAL seconds through the
# published port, each on a new connection (no retry), until stopped (Ctrl-C or SIGTERM); then the count of
# each answer (HTTP status, or 000 for a failed connection) and the slowest. docs/RELIABILITY.md's
# operator figures came from it:
#   scripts/steady-caller.sh & sleep 2; docker compose restart gateway; sleep 3; kill %1
#
#   scripts/steady-caller.sh [URL] [KEY_FILE] [INTERVAL]   defaults: http://127.0.0.1:8080, secrets/api_key, 0.05
set -uo pipefail
url="${1:-http://127.0.0.1:8080}"
key_file="${2:-secrets/api_key}"
interval="${3:-0.05}"
[ -r "$key_file" ] || { echo "steady-caller: no API key file $key_file (make api-key writes one)" >&2; exit 2; }
key="$(grep -m1 -v '^#' "$key_file")"
log="$(mktemp)"
summary() {
  echo "steady-caller: $(wc -l <"$log") requests; by status: $(cut -d' ' -f1 "$log" | sort | uniq -c | awk '{printf "%s x %s  ", $2, $1}')slowest $(sort -k2 -g "$log" | tail -1 | cut -d' ' -f2) s" >&2
  rm -f "$log"
  exit 0
}
trap summary INT TERM
while :; do
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -m 30 "$url/predictions/gru_encoder" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"texts": ["i am cold ."]}' >>"$log"
  sleep "$interval" & wait $!
done
