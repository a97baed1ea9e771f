#!/usr/bin/env bash
# benches/xds.sh: one-command benchmark of xDS propagation, `apply` to the last proxy's ACK.
#
# For each client count N (default 1, 100, 1000): starts a fresh tandem-control-plane (temp
# data dir, ports 0), seeds a mesh (--services services with --endpoints endpoints each and
# the HTTPRoute under test), connects N simulated ADS clients (bench-xds, one TCP connection
# and one ADS stream each), then changes the route's weights --rounds times (after --warmup
# unmeasured rounds) and times each change until the last client ACKed it. Also records the
# control plane's RSS (idle, with N clients, peak) and CPU time per round.
# Each N runs in two client modes (--modes): `full`, where every simulated client does the
# proxy's whole xDS work on each push (decode, validate, build the view, ACK), and `ack`,
# where clients only ACK and decode the changed route, isolating the control plane.
# Prints a markdown table; raw output goes to benches/results/xds-STAMP/.
# See docs/benchmarks-xds.md.
#
# Usage: benches/xds.sh [--clients 1,100,1000] [--modes full,ack] [--rounds 30] [--warmup 2]
#                       [--services 50] [--endpoints 2] [--timeout S] [--settle S]
#                       [--wait-idle S] [--no-build]
set -euo pipefail

CLIENTS=1,100,1000
MODES=full,ack
ROUNDS=30
WARMUP=2
SERVICES=50
ENDPOINTS=2
TIMEOUT=30       # per round (and at least 60 s for the initial sync), seconds
SETTLE=0.3       # pause after each round before reading CPU time, seconds
WAIT_IDLE=120    # before each N, wait up to this long for compilers to finish, seconds
BUILD=1

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --clients) CLIENTS=$2; shift ;;
        --modes) MODES=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --services) SERVICES=$2; shift ;;
        --endpoints) ENDPOINTS=$2; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        --settle) SETTLE=$2; shift ;;
        --wait-idle) WAIT_IDLE=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage 0 ;;
        *) echo "xds.sh: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$ROOT/benches/results/xds-$STAMP"
WORK=$(mktemp -d /tmp/tandem-xds.XXXXXX)
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)
IFS=, read -r -a CLIENT_LIST <<<"$CLIENTS"
IFS=, read -r -a MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do
    case "$m" in full|ack) ;; *) echo "xds.sh: unknown mode '$m'" >&2; exit 2 ;; esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Both the control plane and bench-xds hold one socket per client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$(( $(IFS=,; for n in $CLIENTS; do echo "$n"; done | sort -n | tail -1) + 256 ))
(( $(ulimit -n) >= need )) || die "open-file limit $(ulimit -n) is below $need; raise the hard limit"

# ---------------------------------------------------------------- build
CP="$ROOT/target/release/tandem-control-plane"
BX="$ROOT/target/release/bench-xds"
if (( BUILD )); then
    log "building release tandem-control-plane and bench-xds"
    (cd "$ROOT" && cargo build --release -q -p tandem-control-plane -p tandem-benches) \
        || die "build failed"
fi
[[ -x "$CP" && -x "$BX" ]] || die "missing $CP or $BX (drop --no-build)"

compilers() { ps -eo comm= | grep -cE '^(rustc|clippy-driver|cc1|cc1plus|ld|rust-lld)$' || true; }

wait_idle() {
    local waited=0
    while (( $(compilers) > 0 && waited < WAIT_IDLE )); do
        (( waited == 0 )) && log "compilers running; waiting up to ${WAIT_IDLE}s"
        sleep 5
        waited=$((waited + 5))
    done
}

# ---------------------------------------------------------------- control plane
CP_PID=
API=
XDS=
DATA=
start_cp() { # label
    DATA="$WORK/data-$1"
    mkdir -p "$DATA"
    "$CP" --data-dir "$DATA" --xds-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 --identity-addr 127.0.0.1:0 --plaintext-xds \
        >"$WORK/cp-$1.out" 2>"$OUT/cp-$1.log" &
    CP_PID=$!
    PIDS+=("$CP_PID")
    local line= i
    for ((i = 0; i < 200; i++)); do
        line=$(grep -m1 '^tandem-control-plane ready ' "$WORK/cp-$1.out" 2>/dev/null || true)
        [[ -n "$line" ]] && break
        kill -0 "$CP_PID" 2>/dev/null || die "control plane exited: $(tail -3 "$OUT/cp-$1.log")"
        sleep 0.1
    done
    [[ -n "$line" ]] || die "control plane not ready after 20 s"
    API=$(sed -n 's/.* api=\([^ ]*\).*/\1/p' <<<"$line")
    XDS=$(sed -n 's/.* xds=\([^ ]*\).*/\1/p' <<<"$line")
    [[ -n "$API" && -n "$XDS" ]] || die "cannot parse ready line: $line"
}

# field NAME LINE: the value of NAME= in a RESULT line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# ---------------------------------------------------------------- runs
printf 'mode\tclients\tcompilers_before\tcompilers_after\tresult\n' >"$OUT/results.tsv"
declare -A RESULT BUSY
for mode in "${MODE_LIST[@]}"; do
    for n in "${CLIENT_LIST[@]}"; do
        key="$mode-$n"
        wait_idle
        before=$(compilers)
        log "$key: starting the control plane"
        start_cp "$key"
        "$BX" seed --api "$API" --token-file "$DATA/admin-token" \
            --services "$SERVICES" --endpoints "$ENDPOINTS" >&2
        log "$key: $ROUNDS rounds (+$WARMUP warm-up), api=$API xds=$XDS"
        # Bounded: the sync waits at most max(TIMEOUT, 60) s, each round at most TIMEOUT s.
        limit=$(( 60 + TIMEOUT + (ROUNDS + WARMUP) * (TIMEOUT + 1) ))
        if ! line=$(timeout "$limit" "$BX" run --api "$API" --xds "$XDS" \
                --token-file "$DATA/admin-token" --clients "$n" --mode "$mode" \
                --rounds "$ROUNDS" --warmup "$WARMUP" --cp-pid "$CP_PID" --clk-tck "$CLK_TCK" \
                --timeout "$TIMEOUT" --settle "$SETTLE" \
                2> >(tee "$OUT/bench-$key.log" >&2) | grep '^RESULT '); then
            die "bench-xds failed for $key (see $OUT/bench-$key.log)"
        fi
        after=$(compilers)
        stop "$CP_PID"
        RESULT[$key]=$line
        BUSY[$key]="$before/$after"
        printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$n" "$before" "$after" "$line" >>"$OUT/results.tsv"
    done
done

# ---------------------------------------------------------------- report
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
{
    echo
    echo "xDS propagation, apply → last ACK: $ROUNDS rounds (+$WARMUP warm-up) per row," \
        "$SERVICES services × $ENDPOINTS endpoints, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| mode | clients | last ACK p50 | last ACK p99 | max | commit → last p50 | apply (REST) p50 | per-client p50 / p99 | initial sync | CP RSS idle → N clients (peak) | CP CPU / round | bench CPU / round | CP confirmed ACKs | compilers (before/after) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"
    for mode in "${MODE_LIST[@]}"; do
        for n in "${CLIENT_LIST[@]}"; do
            key="$mode-$n"
            r=${RESULT[$key]}
            printf '| %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s / %s ms | %s ms | %s → %s MiB (%s) | %s ms | %s ms | %s/%s | %s |\n' \
                "$mode" "$n" "$(field p50_ms "$r")" "$(field p99_ms "$r")" "$(field max_ms "$r")" \
                "$(field commit_p50_ms "$r")" "$(field apply_p50_ms "$r")" \
                "$(field client_p50_ms "$r")" "$(field client_p99_ms "$r")" \
                "$(field sync_ms "$r")" \
                "$(mib "$(field rss_idle_kib "$r")")" "$(mib "$(field rss_clients_kib "$r")")" \
                "$(mib "$(field rss_hwm_kib "$r")")" \
                "$(field cp_cpu_ms_round "$r")" "$(field bench_cpu_ms_round "$r")" \
                "$(field cp_confirmed "$r")" "$n" "${BUSY[$key]}"
        done
    done
} | tee "$OUT/table.md"
log "raw output: $OUT"
