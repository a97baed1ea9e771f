#!/usr/bin/env bash
# benches/instructions.sh: instructions per proxied request, counted by callgrind, for one or
# more tandem-proxy binaries side by side (e.g. the release build of two commits).
#
# Wall-clock figures on a shared 2-core machine move by ±10 % from run to run; instruction
# counts do not: the same binary, config and load give the same count whatever else the
# machine is doing. This is the noise-free complement to benches/run.sh for "did this change
# make a request cheaper or dearer", not a replacement for it (it says nothing about system
# time, cache misses or latency).
#
# For each binary: bench-upstream and tandem-proxy (static config, one worker) start on
# loopback, the proxy under `valgrind --tool=callgrind`; h2load sends N1, then (in a second
# run) N2 requests over 10 keep-alive connections, HTTP/1.1 (--h1) and HTTP/2. Per request =
# (instructions at N2 - instructions at N1) / (N2 - N1): start-up and shutdown cancel out.
#
# --variant NAME=ARGS (repeatable) runs each binary once per variant with ARGS added to the
# proxy's command line, in the same sitting: the price of a feature (the access log, tracing)
# is the difference between two rows. In ARGS, {work} is the run's scratch directory and
# {otlp} the URL of a bench-otlp trace sink started for the run.
#
# Usage: benches/instructions.sh [--n1 N] [--n2 N] [--variant NAME=ARGS]... BIN [BIN...]
#   e.g. benches/instructions.sh /tmp/before/tandem-proxy target/release/tandem-proxy
#        benches/instructions.sh --variant plain= \
#            --variant access-log='--access-log {work}/access.log' \
#            --variant traced='--trace-collector {otlp} --trace-sampling 1' \
#            target/release/tandem-proxy
set -euo pipefail

N1=2000
N2=12000
BINS=()
VARIANTS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --n1) N1=$2; shift ;;
        --n2) N2=$2; shift ;;
        --variant) VARIANTS+=("$2"); shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) BINS+=("$1") ;;
    esac
    shift
done
[[ ${#BINS[@]} -gt 0 ]] || { echo "instructions.sh: name at least one tandem-proxy binary" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
command -v h2load >/dev/null || { echo "instructions.sh: needs h2load (apt-get install -y nghttp2-client)" >&2; exit 2; }

[[ ${#VARIANTS[@]} -gt 0 ]] || VARIANTS=("default=")

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UPSTREAM_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bench-upstream"
OTLP_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bench-otlp"
[[ -x $UPSTREAM_BIN && -x $OTLP_BIN ]] || cargo build --release -q -p tandem-benches
WORK=$(mktemp -d /tmp/tandem-instr.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_line() { # FILE REGEX SECONDS
    local i line
    for ((i = 0; i < $3 * 20; i++)); do
        line=$(grep -m1 -oE "$2" "$1" 2>/dev/null || true)
        if [[ -n $line ]]; then printf '%s\n' "$line"; return 0; fi
        sleep 0.05
    done
    return 1
}

"$UPSTREAM_BIN" --addr 127.0.0.1:0 --workers 1 >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
UPSTREAM=$(wait_line "$WORK/upstream.log" '^[0-9.]+:[0-9]+$' 10) || { echo "bench-upstream did not start" >&2; exit 1; }
OTLP=
if printf '%s\n' "${VARIANTS[@]}" | grep -q '{otlp}'; then
    "$OTLP_BIN" --addr 127.0.0.1:0 >"$WORK/otlp.log" 2>"$WORK/otlp.err" &
    PIDS+=($!)
    OTLP=http://$(wait_line "$WORK/otlp.log" '^[0-9.]+:[0-9]+$' 10) || { echo "bench-otlp did not start" >&2; exit 1; }
fi
cat >"$WORK/tandem.yaml" <<EOF
service: bench-client
services:
  - name: bench
    endpoints:
      - $UPSTREAM
timeouts:
  shutdown_grace: 1s
EOF

# count BIN PROTO N ARGS: total instructions of one proxy process that served N requests.
count() {
    local bin=$1 proto=$2 n=$3 out="$WORK/callgrind.$RANDOM" log="$WORK/proxy.$RANDOM.log" pid addr
    local extra=${4//\{work\}/$WORK}
    extra=${extra//\{otlp\}/$OTLP}
    # shellcheck disable=SC2086 # ARGS are words on purpose
    valgrind --tool=callgrind --callgrind-out-file="$out" -q \
        "$bin" --config "$WORK/tandem.yaml" --workers 1 --log warn \
        --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 $extra \
        >"$log" 2>&1 &
    pid=$!
    addr=$(wait_line "$log" 'outbound=[0-9.]+:[0-9]+' 120) || { echo "proxy did not start: $(cat "$log")" >&2; exit 1; }
    addr=${addr#outbound=}
    local flags=()
    [[ $proto == h1 ]] && flags=(--h1)
    h2load "${flags[@]}" -n "$n" -c 10 -m 1 -H ":authority: bench" "http://$addr/" >"$WORK/h2load.log" 2>&1 \
        || { echo "h2load failed: $(tail -3 "$WORK/h2load.log")" >&2; exit 1; }
    grep -q "$n succeeded, 0 failed" "$WORK/h2load.log" \
        || { echo "h2load: not every request succeeded: $(grep requests: "$WORK/h2load.log")" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

printf '| binary | variant | protocol | instructions at %d | at %d | per request |\n| --- | --- | --- | ---: | ---: | ---: |\n' "$N1" "$N2"
for bin in "${BINS[@]}"; do
    for variant in "${VARIANTS[@]}"; do
        name=${variant%%=*}
        args=${variant#*=}
        for proto in h1 h2; do
            a=$(count "$bin" "$proto" "$N1" "$args")
            b=$(count "$bin" "$proto" "$N2" "$args")
            printf '| %s | %s | %s | %s | %s | %s |\n' "$bin" "$name" "$proto" "$a" "$b" "$(( (b - a) / (N2 - N1) ))"
        done
    done
done
if [[ -n $OTLP ]]; then
    sleep 1
    echo "bench-otlp received: $(tail -1 "$WORK/otlp.err" 2>/dev/null || echo 'no spans')"
fi
