#!/usr/bin/env bash
# benches/canary.sh: the guarded canary's promise, measured on release binaries, several
# runs, medians: time from a failing canary's first failed request to 100% stable on the
# proxy, the share of all requests failed, and the time a healthy canary takes from start
# to promotion.
#
# Each run is the integration test that holds the promise (tests/tests/canary.rs: a real
# control plane, a client proxy in xDS mode, web-v1 healthy, web-v2 failing 20% of its
# requests, ~160 requests/s of steady load, `--auto --max-error-rate 1% --min-requests 20`),
# pointed at the release build through TANDEM_PROXY_BIN, TANDEM_CONTROL_PLANE_BIN and
# TANDEMCTL_BIN. The goals (issue #13): rollback within 10 s of the first failure, at most
# 0.5% of all requests failed, zero failed on the way to a promotion.
#
# Usage: benches/canary.sh [--runs N] [--no-build]
set -euo pipefail

RUNS=5
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "canary.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ $BUILD == 1 ]]; then
    cargo build --release -q -p tandem-proxy -p tandem-control-plane -p tandemctl
fi
export TANDEM_PROXY_BIN="$TARGET/release/tandem-proxy"
export TANDEM_CONTROL_PLANE_BIN="$TARGET/release/tandem-control-plane"
export TANDEMCTL_BIN="$TARGET/release/tandemctl"
WORK=$(mktemp -d /tmp/tandem-canary.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Duration as Rust's Debug prints it (1.13s, 983.4ms, 12µs) → milliseconds.
to_ms() {
    awk -v d="$1" 'BEGIN {
        if (d ~ /ms$/) { sub(/ms$/, "", d); printf "%.0f", d }
        else if (d ~ /µs$/) { sub(/µs$/, "", d); printf "%.3f", d / 1000 }
        else if (d ~ /ns$/) { printf "0" }
        else { sub(/s$/, "", d); printf "%.0f", d * 1000 } }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$WORK/detect" ; : >"$WORK/share" ; : >"$WORK/failed" ; : >"$WORK/promote"
for ((i = 1; i <= RUNS; i++)); do
    log="$WORK/run$i.log"
    cargo test -q -p tandem-tests --test canary guarded -- --nocapture --test-threads 1 >"$log" 2>&1 \
        || { echo "run $i failed:" >&2; tail -40 "$log" >&2; exit 1; }
    line=$(grep -m1 -o 'guarded rollback.*' "$log")
    failed=$(sed -E 's/.*: ([0-9]+) of ([0-9]+) requests failed.*/\1 \2/' <<<"$line")
    share=$(sed -E 's/.*requests failed \(([0-9.]+)%\).*/\1/' <<<"$line")
    detect=$(sed -E 's/.*rolled back on the proxy ([^ ]+) after it.*/\1/' <<<"$line")
    promote=$(grep -m1 -o 'guarded promotion in.*' "$log" | sed -E 's/^guarded promotion in ([^:]+):.*/\1/')
    printf 'run %d: rollback %s after the first failure, %s requests failed (%s%%); healthy canary promoted in %s\n' \
        "$i" "$detect" "${failed/ / of }" "$share" "$promote"
    to_ms "$detect" >>"$WORK/detect"; echo >>"$WORK/detect"
    echo "$share" >>"$WORK/share"
    echo "${failed%% *}" >>"$WORK/failed"
    to_ms "$promote" >>"$WORK/promote"; echo >>"$WORK/promote"
done

echo
echo "| figure ($RUNS runs, release build) | median | min | max | goal |"
echo "| --- | ---: | ---: | ---: | --- |"
row() { # NAME FILE UNIT GOAL
    local med min max
    med=$(grep -v '^$' "$2" | median)
    min=$(grep -v '^$' "$2" | sort -n | head -1)
    max=$(grep -v '^$' "$2" | sort -n | tail -1)
    echo "| $1 | $med$3 | $min$3 | $max$3 | $4 |"
}
row "first failed request → 100% stable on the proxy" "$WORK/detect" " ms" "≤ 10 s"
row "requests failed, 15 s of load from canary start" "$WORK/failed" "" "—"
row "share of all requests failed" "$WORK/share" "%" "≤ 0.5%"
row "healthy canary: start → promoted (3 steps of 2 s)" "$WORK/promote" " ms" "0 failed (asserted)"
