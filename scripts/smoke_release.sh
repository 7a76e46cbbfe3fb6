#!/usr/bin/env bash
# Smoke test of a build, as the release workflow runs it on each Linux build before publishing:
# both programs answer --version, then a relay and a client on loopback serve one request from a
# sample origin through a tunnel.
#
#   scripts/smoke_release.sh CLIENT SERVER      (paths of the reverprox and reverprox-server executables)
#
# SMOKE_EXPECT_VERSION: a version both --version outputs must mention (the release tag's).
# SMOKE_HTTP_PORT, SMOKE_QUIC_PORT, SMOKE_ORIGIN_PORT: loopback ports (8080, 4433, 8000).
# SMOKE_TIMEOUT: seconds to wait for the relay and the client to come up (60: emulated builds are slow).
# Needs python3 (the origin) and curl.
set -euo pipefail

client=${1:?usage: smoke_release.sh CLIENT SERVER}
server=${2:?usage: smoke_release.sh CLIENT SERVER}
http_port=${SMOKE_HTTP_PORT:-8080}
quic_port=${SMOKE_QUIC_PORT:-4433}
origin_port=${SMOKE_ORIGIN_PORT:-8000}
timeout=${SMOKE_TIMEOUT:-60}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "smoke: FAILED: $*" >&2
  for log in "$work"/*.log; do
    [[ -e $log ]] && sed "s|^|  [$(basename "$log" .log)] |" "$log" >&2
  done
  exit 1
}

# check_version NAME EXECUTABLE: exits 0 and prints something (the expected version, if given).
check_version() {
  local out
  out=$("$2" --version 2>&1) || fail "$1 --version exited with $?: $out"
  [[ -n $out ]] || fail "$1 --version printed nothing"
  if [[ -n ${SMOKE_EXPECT_VERSION:-} && $out != *"$SMOKE_EXPECT_VERSION"* ]]; then
    fail "$1 --version does not mention $SMOKE_EXPECT_VERSION: $out"
  fi
  echo "smoke: $1 --version: $out"
}

# wait_for LOG PATTERN: until a line of LOG matches PATTERN (grep -E), for at most $timeout s.
wait_for() {
  local deadline=$((SECONDS + timeout))
  until grep -qE "$2" "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "no line matching '$2' in $(basename "$1") after ${timeout}s"
    sleep 0.2
  done
}

check_version reverprox "$client"
check_version reverprox-server "$server"

mkdir -p "$work/site" "$work/state" "$work/config"
token="reverprox smoke $RANDOM$RANDOM"
echo "$token" >"$work/site/index.html"
python3 -u -m http.server "$origin_port" --bind 127.0.0.1 --directory "$work/site" >"$work/origin.log" 2>&1 &
pids+=($!)
wait_for "$work/origin.log" '^Serving HTTP'

"$server" --domain localhost --hostname 127.0.0.1 --http-port "$http_port" --quic-port "$quic_port" \
  --state-dir "$work/state" >"$work/relay.log" 2>&1 &
pids+=($!)
wait_for "$work/relay.log" '^ready http=[0-9]+ quic=[0-9]+ fingerprint='
fingerprint=$(sed -nE 's/^ready .*fingerprint=([^ ]+).*/\1/p' "$work/relay.log")

REVERPROX_CONFIG_DIR="$work/config" "$client" "$origin_port" smoke \
  --server "quic://127.0.0.1:$quic_port" --fingerprint "$fingerprint" >"$work/client.log" 2>&1 &
pids+=($!)
wait_for "$work/client.log" '^reverprox: online'

body=$(curl -fsS --max-time 30 -H 'Host: smoke.localhost' "http://127.0.0.1:$http_port/") ||
  fail "curl through the tunnel failed"
[[ $body == "$token" ]] || fail "the tunnel answered '$body', not the origin's '$token'"
echo "smoke: ok: http://smoke.localhost:$http_port/ served the origin's page through the tunnel"
