#!/usr/bin/env bash
# benches/profile.sh: where tandem-proxy spends its CPU under closed-loop HTTP/1.1 load.
#
# Starts bench-upstream and tandem-proxy (release build, line tables) on 127.0.0.1, drives
# them with wrk (or h2load with --h2), and records the proxy with `perf record` while the
# load runs. Writes perf.data plus flat and caller reports to benches/results/profile-<time>/.
#
# Usage: benches/profile.sh [--h2] [--duration S]
set -euo pipefail

DURATION=8
KIND=h1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --h2) KIND=h2 ;;
        --duration) DURATION=$2; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/benches/results/profile-$(date +%Y%m%d-%H%M%S)"
WORK=$(mktemp -d /tmp/tandem-profile.XXXXXX)
mkdir -p "$OUT"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null && command -v h2load >/dev/null \
    || { echo "profile.sh: needs wrk and h2load (benches/run.sh installs them)" >&2; exit 1; }

cd "$ROOT"
cargo build --release -q -p tandem-proxy -p tandem-benches
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

wait_line() {
    local i line
    for ((i = 0; i < 200; i++)); do
        line=$(grep -m1 -E "$2" "$1" 2>/dev/null || true)
        [[ -n $line ]] && { echo "$line"; return 0; }
        sleep 0.05
    done
    echo "profile.sh: no line matching '$2' in $1" >&2
    return 1
}

"$BIN/bench-upstream" --addr 127.0.0.1:0 >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
UPSTREAM=$(wait_line "$WORK/upstream.log" '^[0-9.]+:[0-9]+$')
printf 'services:\n  - name: bench\n    endpoints: [%s]\ntimeouts:\n  shutdown_grace: 1s\n' "$UPSTREAM" >"$WORK/tandem.yaml"
"$BIN/tandem-proxy" --config "$WORK/tandem.yaml" --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 --log warn --workers 2 >"$WORK/tandem.log" 2>"$WORK/tandem.err.log" &
PROXY=$!
PIDS+=("$PROXY")
OUTBOUND=$(wait_line "$WORK/tandem.log" '^tandem-proxy ready' | sed -E 's/.* outbound=([^ ]+).*/\1/')

# Warm the pools, then record while the load runs.
timeout 30 wrk -t2 -c50 -d2s -H 'Host: bench' "http://$OUTBOUND/" >/dev/null
if [[ $KIND == h1 ]]; then
    timeout $((DURATION + 30)) wrk -t2 -c50 -d"$((DURATION + 2))s" -H 'Host: bench' "http://$OUTBOUND/" >"$OUT/load.txt" &
else
    timeout $((DURATION + 30)) h2load -t2 -c10 -m10 -D "$((DURATION + 2))" -H ':authority: bench' "http://$OUTBOUND/" >"$OUT/load.txt" &
fi
LOAD=$!
PIDS+=("$LOAD")
sleep 1
perf record -q -F 499 --call-graph dwarf,16384 -p "$PROXY" -o "$OUT/perf.data" -- sleep "$DURATION" 2>"$OUT/perf-record.log"
wait "$LOAD" || true

perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio -g none \
    >"$OUT/flat.txt" 2>/dev/null
perf report -i "$OUT/perf.data" --children --sort symbol --percent-limit 3 --stdio -g caller,0.5,callee,function,percent \
    >"$OUT/callers.txt" 2>/dev/null
grep -E 'Requests/sec|finished in' "$OUT/load.txt" || true
echo "profile in $OUT (flat.txt: self time per function; callers.txt: inclusive, with call chains)"
