#!/usr/bin/env bash
# benches/run.sh: one-command benchmark of tandem-proxy against direct, nginx and HAProxy.
#
# Starts bench-upstream, tandem-proxy, nginx and HAProxy on 127.0.0.1, then, for each
# target, measures HTTP/1.1 closed-loop throughput (wrk), HTTP/2 closed-loop throughput
# (h2load), fixed-rate latency percentiles (bench-load, open loop) and each proxy's CPU time
# per request and RSS. Every measurement is repeated (--runs, default 3) and the medians are
# reported with ratios to direct and to the better of nginx and HAProxy.
# See docs/benchmarks.md for what is measured and why.
#
# Targets: direct, tandem (static config, no routes), tandem-routed (xDS from a real
# tandem-control-plane: a 20-rule HTTPRoute whose last rule splits 90/10), nginx, haproxy,
# pair-plain and pair-mtls (issue #5: client sidecar -> server sidecar -> upstream, two
# proxies with identities from one control plane; plaintext or mutual TLS between them).
#
# Usage: benches/run.sh [--quick] [--runs N] [--targets direct,tandem,nginx,haproxy]
#                       [--duration S] [--lat-duration S] [--rate N] [--wait-idle S]
#                       [--retries N] [--no-install] [--no-build]
set -euo pipefail

# ---------------------------------------------------------------- settings
RUNS=3
DURATION=10          # closed-loop runs (wrk, h2load), seconds
LAT_DURATION=15      # fixed-rate latency run, seconds (after LAT_WARMUP)
LAT_WARMUP=2
WARMUP=2             # closed-loop warm-up per target before the first round, seconds
RATE=2000            # fixed rate for the latency run, requests/s
LAT_CONNS=16         # keep-alive connections (per target) the latency generator uses
LAT_CHUNK=0.25       # the latency run takes the targets in turns of this many seconds
H1_THREADS=2         # wrk threads
H1_CONNS=50          # wrk connections
H2_THREADS=2         # h2load threads
H2_CONNS=10          # h2load connections ...
H2_STREAMS=10        # ... times concurrent streams each
WORKERS=2            # worker processes/threads for each proxy and the upstream (= cores)
HOST=bench           # Host / :authority sent to every target; tandem's service name
ROUTED_RULES=20      # tandem-routed: rules in its HTTPRoute (the last one is the 90/10 split)
PAIR_TLS=pairtls     # pair-mtls: the server sidecar's service (TLS mode mutual, the default)
PAIR_PLAIN=pairplain # pair-plain: the server sidecar's service (mtls mode disabled)
TARGETS=direct,tandem,nginx,haproxy
INSTALL=1
BUILD=1              # --no-build: use the release binaries already built (a shared tree mid-edit)
WAIT_IDLE=120        # before each measurement, wait up to this long for compilers to finish
RETRIES=2            # repeat a measurement that overlapped compiler activity, at most this often
LAG_LIMIT_US=500     # latency runs whose generator lagged more than this at p99 are repeated
HS_RAMP=1            # pairs: handshakes/s under steady load are counted from this many seconds into a run

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) RUNS=1; DURATION=3; LAT_DURATION=3; LAT_WARMUP=1; WARMUP=1 ;;
        --runs) RUNS=$2; shift ;;
        --targets) TARGETS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --lat-duration) LAT_DURATION=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --wait-idle) WAIT_IDLE=$2; shift ;;
        --retries) RETRIES=$2; shift ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$ROOT/benches/results/$STAMP"
RAW="$OUT/raw"
WORK=$(mktemp -d /tmp/tandem-bench.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$RAW"
TSV="$OUT/results.tsv"
printf 'round\ttarget\tmetric\tvalue\n' >"$TSV"
CLK_TCK=$(getconf CLK_TCK)
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_target() { [[ ",$TARGETS," == *",$1,"* ]]; }

for t in "${TARGET_LIST[@]}"; do
    case "$t" in direct|tandem|tandem-routed|nginx|haproxy|pair-plain|pair-mtls) ;; *) die "unknown target '$t'" ;; esac
done
# Whether any target is a sidecar pair (issue #5).
has_pair() { has_target pair-plain || has_target pair-mtls; }
# Whether any target runs tandem-proxy (static, routed or a pair).
has_tandem() { has_target tandem || has_target tandem-routed || has_pair; }
# Whether any target needs tandem-control-plane (and tandemctl).
needs_cp() { has_target tandem-routed || has_pair; }

# ---------------------------------------------------------------- cleanup
PIDS=()
DISTURBED=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    cp -r "$WORK"/*.log "$WORK"/*.conf "$WORK"/*.cfg "$WORK"/*.yaml "$RAW"/ 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
ensure_tools() {
    local missing=() pkgs=()
    command -v wrk >/dev/null || { missing+=(wrk); pkgs+=(wrk); }
    command -v h2load >/dev/null || { missing+=(h2load); pkgs+=(nghttp2-client); }
    command -v curl >/dev/null || { missing+=(curl); pkgs+=(curl); }
    if has_target nginx; then command -v nginx >/dev/null || { missing+=(nginx); pkgs+=(nginx); }; fi
    if needs_cp; then command -v python3 >/dev/null || { missing+=(python3); pkgs+=(python3); }; fi
    if has_target haproxy; then command -v haproxy >/dev/null || { missing+=(haproxy); pkgs+=(haproxy); }; fi
    [[ ${#missing[@]} == 0 ]] && return 0
    [[ $INSTALL == 1 ]] || die "missing ${missing[*]} (run without --no-install, or apt-get install ${pkgs[*]})"
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: run as root or apt-get install ${pkgs[*]}"
    log "installing ${pkgs[*]} from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# ---------------------------------------------------------------- helpers
# wait_line FILE REGEX SECONDS: the first line of FILE matching REGEX, once it appears.
wait_line() {
    local file=$1 re=$2 limit=$3 i line
    for ((i = 0; i < limit * 20; i++)); do
        line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
        if [[ -n $line ]]; then printf '%s\n' "$line"; return 0; fi
        sleep 0.05
    done
    return 1
}

# wait_http URL SECONDS [h2]: until the URL answers 200.
wait_http() {
    local url=$1 limit=$2 proto=${3:-h1} i code opt=()
    [[ $proto == h2 ]] && opt=(--http2-prior-knowledge)
    for ((i = 0; i < limit * 10; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "${opt[@]}" -H "Host: $HOST" "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}

# free_port: a port below the ephemeral range (so no client socket can hold it) that no
# socket uses. nginx and HAProxy cannot report a port-0 bind back, so they get one of these.
free_port() {
    local p low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (low - 10000)))
        if command -v ss >/dev/null; then
            [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return 0; }
        elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    die "no free port found"
}

# pids_of TARGET: the processes whose CPU and memory count for that target (for a sidecar
# pair: both proxies, the client sidecar in MAIN_PID and the server sidecar in PEER_PID).
pids_of() {
    local main=${MAIN_PID[$1]:-} peer=${PEER_PID[$1]:-}
    [[ -n $main ]] || return 0
    echo "$main"
    [[ -z $peer ]] || echo "$peer"
    pgrep -P "$main" 2>/dev/null || true   # nginx workers
}

# cpu_ticks PID...: "utime stime" summed over the processes (all threads), in clock ticks.
cpu_ticks() {
    local user=0 sys=0 p stat rest
    for p in "$@"; do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        # shellcheck disable=SC2086
        set -- $rest
        user=$((user + ${12}))
        sys=$((sys + ${13}))
    done
    echo "$user $sys"
}

# per_req TICKS0 TICKS1 REQUESTS: "total user sys" CPU µs per request between two cpu_ticks.
per_req() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN{
        split(a, x, " "); split(b, y, " "); u = (y[1] - x[1]) * 1e6 / hz / n; s = (y[2] - x[2]) * 1e6 / hz / n
        printf "%.2f %.2f %.2f", u + s, u, s }'
}

# mem_kb FIELD PID...: VmRSS (from status) or Pss (from smaps_rollup) summed, in kB.
mem_kb() {
    local field=$1 total=0 p v
    shift
    for p in "$@"; do
        if [[ $field == Pss ]]; then
            v=$(awk '/^Pss:/{print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        else
            v=$(awk '/^VmRSS:/{print $2; exit}' "/proc/$p/status" 2>/dev/null || true)
        fi
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# compilers: how many compiler/linker processes run now (other work on this shared machine).
compilers() { ps -eo comm= | grep -cE '^(rustc|clippy-driver|cc1|cc1plus|ld|cargo)$' || true; }

# cpu_busy: percent of all CPUs busy over the next half second (any process).
cpu_busy() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat)
    sleep 0.5
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; print (t > 0 ? int(100 * (y[1] - x[1]) / t) : 0)}'
}

# wait_quiet: wait (bounded by WAIT_IDLE) until no compiler runs and the machine is otherwise
# idle (under 15 % busy between measurements), so that other work does not skew figures.
wait_quiet() {
    local i busy
    for ((i = 0; i < WAIT_IDLE; i++)); do
        busy=$(cpu_busy)
        if [[ $(compilers) == 0 && $busy -lt 15 ]]; then
            [[ $i == 0 ]] || log "  (waited ${i}s for the machine to be idle)"
            return 0
        fi
        sleep 0.5
    done
    log "  warning: machine still busy after ${WAIT_IDLE}s (${busy}% CPU, $(compilers) compilers); measuring anyway"
}

# start_sampler PID...: every second, append "<rss kB> <compilers>" to $WORK/samples.
start_sampler() {
    : >"$WORK/samples"
    (
        while :; do
            if [[ $# -gt 0 ]]; then rss=$(mem_kb VmRSS "$@"); else rss=0; fi
            echo "$rss $(compilers)" >>"$WORK/samples"
            sleep 1
        done
    ) &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
}

# stop_sampler: stops it; sets RSS_MAX (kB, max sample) and BUSY_MAX (max compilers seen).
stop_sampler() {
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    RSS_MAX=$(awk 'BEGIN{m=0} $1>m{m=$1} END{print m}' "$WORK/samples")
    BUSY_MAX=$(awk 'BEGIN{m=0} $2>m{m=$2} END{print m}' "$WORK/samples")
}

# record ROUND TARGET METRIC VALUE: into the pending set of the measurement in progress;
# measured() moves it to results.tsv once the measurement is accepted.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$WORK/pending"; }

# check_alive: every server still runs (a figure measured against a dead one is garbage).
check_alive() {
    local name
    for name in "${!MAIN_PID[@]}"; do
        kill -0 "${MAIN_PID[$name]}" 2>/dev/null \
            || die "$name (pid ${MAIN_PID[$name]}) died during the run; its log is in $RAW"
    done
}

# measured FN ARGS...: runs a measurement; repeats it (up to RETRIES times) while it was
# disturbed (the function sets DISTURBED: compilers ran, or the latency generator itself was
# starved of CPU), so that other work on a shared machine does not land in the figures.
measured() {
    local attempt
    for ((attempt = 0; ; attempt++)); do
        : >"$WORK/pending"
        "$@"
        check_alive
        if [[ -z $DISTURBED || $attempt -ge $RETRIES ]]; then break; fi
        log "  repeating: $DISTURBED"
    done
    cat "$WORK/pending" >>"$TSV"
    : >"$WORK/pending"
}

# ---------------------------------------------------------------- targets
declare -A URL H2URL MAIN_PID ADMIN PEER_PID READY

start_upstream() {
    "$BIN/bench-upstream" --addr 127.0.0.1:0 --workers "$WORKERS" \
        >"$WORK/upstream.log" 2>"$WORK/upstream.err.log" &
    PIDS+=($!)
    MAIN_PID[upstream]=$!
    UPSTREAM=$(wait_line "$WORK/upstream.log" '^[0-9.]+:[0-9]+$' 10) || die "bench-upstream did not start"
    URL[direct]="http://$UPSTREAM/"
    H2URL[direct]="http://$UPSTREAM/"
    wait_http "${URL[direct]}" 5 || die "bench-upstream does not answer"
    log "upstream at $UPSTREAM (pid ${MAIN_PID[upstream]})"
}

# spawn_tandem NAME ARGS...: starts tandem-proxy as target NAME with ARGS (its config source)
# and the settings every tandem target shares: loopback listeners on port 0, `--log warn`, and
# the same thread count as nginx's workers and HAProxy's threads. Waits for its ready line;
# sets URL, H2URL, MAIN_PID and ADMIN for NAME.
spawn_tandem() {
    local name=$1 ready out
    shift
    "$TANDEM" "$@" --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 \
        --admin-addr 127.0.0.1:0 --log warn "${TANDEM_FLAGS[@]}" \
        >"$WORK/$name.log" 2>"$WORK/$name.err.log" &
    PIDS+=($!)
    MAIN_PID[$name]=$!
    ready=$(wait_line "$WORK/$name.log" '^tandem-proxy ready' 20) \
        || { cat "$WORK/$name.err.log" >&2; die "$name: tandem-proxy printed no ready line"; }
    READY[$name]=$ready
    out=$(sed -E 's/.* outbound=([^ ]+).*/\1/' <<<"$ready")
    ADMIN[$name]=$(sed -E 's/.* admin=([^ ]+).*/\1/' <<<"$ready")
    URL[$name]="http://$out/"
    H2URL[$name]="http://$out/"
}

# check_tandem NAME: both HTTP/1.1 and h2c (prior knowledge) reach the upstream through it.
check_tandem() {
    local name=$1 out
    wait_http "${URL[$name]}" 5 || die "$name does not proxy to the upstream (GET ${URL[$name]} with Host: $HOST)"
    wait_http "${H2URL[$name]}" 5 h2 || die "$name does not proxy h2c (prior knowledge, :authority $HOST)"
    out=${URL[$name]#http://}
    log "$name: tandem-proxy outbound at ${out%/}, h1 and h2c (pid ${MAIN_PID[$name]}, ${TANDEM_FLAGS[*]:-default threads})"
}

start_tandem() {
    cat >"$WORK/tandem.yaml" <<EOF
service: bench-client
services:
  - name: $HOST
    endpoints:
      - $UPSTREAM
timeouts:
  shutdown_grace: 1s
EOF
    spawn_tandem tandem --config "$WORK/tandem.yaml"
    check_tandem tandem
}

# The mesh tandem-routed runs on: service $HOST (no endpoints of its own) with an HTTPRoute of
# ROUTED_RULES rules. The first 19 never match the benchmark's requests (GET / with only Host
# and the load tools' own headers), so each is evaluated and fails for every request: other
# path prefixes and exact paths, header, method and query matches on `/`, two regexes. Gateway
# API precedence keeps them all ahead of the last rule, which has no match (everything) and
# splits 90/10 between $HOST-v1 and $HOST-v2. Both backends' only endpoint is the one
# bench-upstream every target uses, so the upstream side is the same as for the others.
routed_mesh() {
    local svc
    for svc in "$HOST" "$HOST-v1" "$HOST-v2"; do
        cat <<EOF
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: $svc }
spec: { ports: [ { port: 80, protocol: detect } ] }
---
EOF
    done
    for svc in "$HOST-v1" "$HOST-v2"; do
        cat <<EOF
apiVersion: tandem.dev/v1alpha1
kind: Endpoint
metadata: { namespace: default }
spec: { service: $svc, address: "$UPSTREAM", labels: { version: ${svc##*-} } }
---
EOF
    done
    cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: $HOST-routes }
spec:
  parentRefs: [ { kind: Service, name: $HOST, port: 80 } ]
  rules:
    - matches: [ { path: { type: PathPrefix, value: /api/v1/users } } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /api/v1/orders }, method: POST } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: Exact, value: /healthz } } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: Exact, value: /login }, method: POST } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { headers: [ { name: x-canary, value: "1" } ] } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { headers: [ { name: x-tenant, value: beta } ] } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /static } } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /admin }, headers: [ { type: RegularExpression, name: x-admin-token, value: "[0-9a-f]{32}" } ] } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: RegularExpression, value: "/items/[0-9]+" } } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { queryParams: [ { name: debug, value: "1" } ] } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /grpc.health.v1.Health }, method: POST } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /reviews }, headers: [ { name: x-user, value: jason } ] } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /v2 } } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { method: DELETE } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { headers: [ { name: x-version, value: v2 } ] } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /search }, queryParams: [ { type: RegularExpression, name: q, value: ".+" } ] } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /ws }, headers: [ { name: upgrade, value: websocket } ] } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - matches: [ { method: GET, headers: [ { name: x-debug, value: "true" } ] } ]
      backendRefs: [ { name: $HOST-v2, port: 80 } ]
    - matches: [ { path: { type: PathPrefix, value: /internal }, headers: [ { name: x-mesh-internal, value: "1" } ] } ]
      backendRefs: [ { name: $HOST-v1, port: 80 } ]
    - backendRefs:
        - { name: $HOST-v1, port: 80, weight: 90 }
        - { name: $HOST-v2, port: 80, weight: 10 }
EOF
}

# routed_view ADMIN: "routes=N split=C1:W1,C2:W2 endpoints=E1,E2" for $HOST from the proxy's
# /config_dump (the last route's clusters and their endpoint counts), or nothing while the
# config is incomplete.
routed_view() {
    curl -s --max-time 2 "http://$1/config_dump" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)["routes"]
    routes = d["route_configs"][d["listeners"][sys.argv[1]]]
    last = routes[-1]["clusters"]
    eps = [len(d["clusters"][c["cluster"]]["endpoints"]) for c in last]
    print("routes=%d split=%s endpoints=%s" % (len(routes),
        ",".join("%s:%d" % (c["cluster"], c["weight"]) for c in last), ",".join(map(str, eps))))
except Exception:
    pass
' "$HOST"
}

# start_control_plane: the one tandem-control-plane tandem-routed and the sidecar pairs
# share (started once; later calls return at once). Plaintext xDS stays open for
# tandem-routed's identity-less proxy; proxies with a join token fetch their certificate and
# then talk xDS over mutual TLS on the identity port. Sets CP_API, CP_XDS and CP_IDENTITY.
CP_API=""
start_control_plane() {
    [[ -z $CP_API ]] || return 0
    local ready
    "$CONTROL_PLANE" --data-dir "$WORK/cp-data" --api-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --identity-addr 127.0.0.1:0 --plaintext-xds \
        --log warn >"$WORK/control-plane.log" 2>"$WORK/control-plane.err.log" &
    PIDS+=($!)
    MAIN_PID[control-plane]=$!
    ready=$(wait_line "$WORK/control-plane.log" '^tandem-control-plane ready' 20) \
        || { cat "$WORK/control-plane.err.log" >&2; die "tandem-control-plane printed no ready line"; }
    CP_API=$(sed -E 's/.* api=([^ ]+).*/\1/' <<<"$ready")
    CP_XDS=$(sed -E 's/.* xds=([^ ]+).*/\1/' <<<"$ready")
    CP_IDENTITY=$(sed -E 's/.* identity=([^ ]+).*/\1/' <<<"$ready")
    log "control plane api=$CP_API xds=$CP_XDS identity=$CP_IDENTITY (pid ${MAIN_PID[control-plane]})"
}

# ctl ARGS...: tandemctl against the control plane, as its admin.
ctl() { "$TANDEMCTL" --api "http://$CP_API" --token-file "$WORK/cp-data/admin-token" "$@"; }

# ctl_apply FILE WHAT: tandemctl apply -f FILE, or die.
ctl_apply() {
    local log="$WORK/tandemctl-apply-$(basename "$1" .yaml).log"
    ctl apply -f "$1" >"$log" 2>&1 || { cat "$log" >&2; die "tandemctl apply of $2 failed"; }
}

# tandem-routed: the real control plane, the mesh above applied with tandemctl, and
# tandem-proxy in xDS mode as the sidecar of a client service.
start_tandem_routed() {
    local view="" i
    start_control_plane
    routed_mesh >"$WORK/routed-mesh.yaml"
    ctl_apply "$WORK/routed-mesh.yaml" "the routed mesh"
    log "applied routed-mesh.yaml"
    spawn_tandem tandem-routed --control-plane "$CP_XDS" --service client
    # Ready means a complete config; wait (bounded) until it holds the whole route table.
    for ((i = 0; i < 100; i++)); do
        view=$(routed_view "${ADMIN[tandem-routed]}")
        [[ $view == "routes=$ROUTED_RULES split="*":90,"*":10 endpoints=1,1" ]] && break
        sleep 0.1
    done
    [[ $view == "routes=$ROUTED_RULES split="*":90,"*":10 endpoints=1,1" ]] \
        || die "tandem-routed: route table not in /config_dump after 10 s (${view:-nothing}); see $RAW/tandem-routed.err.log"
    log "tandem-routed config: $view"
    check_tandem tandem-routed
}

# routed_split: the share of tandem-routed's requests each backend got, from its /metrics
# (tandem_requests_total by `backend`), e.g. "bench-v1=90.0% bench-v2=10.0%".
routed_split() {
    curl -s --max-time 2 "http://${ADMIN[tandem-routed]}/metrics" 2>/dev/null | awk '
        /^tandem_requests_total\{/ && match($0, /backend="[^"]*"/) {
            b = substr($0, RSTART + 9, RLENGTH - 10); n[b] += $NF; t += $NF }
        END { for (b in n) printf "%s=%.1f%% ", b, 100 * n[b] / t }'
}

# ---------------------------------------------------------------- sidecar pairs (issue #5)
# pair-plain and pair-mtls: load generator -> client sidecar -> server sidecar -> upstream.
# Four proxies, all in control-plane mode with a workload identity (join token) from the one
# control plane, so the two pairs differ only in the server service's TLS mode: $PAIR_TLS is
# `mutual` (the default), $PAIR_PLAIN has `mtls: { mode: disabled }`. Each server sidecar's
# inbound port is its service's only endpoint, and its app is bench-upstream. The load
# generators reach a client sidecar on its dedicated outbound listener for the server
# service (`--listen NAME=ADDR`), so every target gets the same Host ($HOST) and the latency
# run stays one interleaved run; the outbound listener by authority (Host: NAME) is checked
# to reach the upstream too at startup.
pair_mesh() {
    local svc
    for svc in "$PAIR_TLS" "$PAIR_TLS-client" "$PAIR_PLAIN" "$PAIR_PLAIN-client"; do
        cat <<EOT
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: $svc, namespace: default }
spec:
EOT
        [[ $svc == "$PAIR_PLAIN" ]] && echo "  mtls: { mode: disabled }"
        cat <<EOT
  ports: [ { port: 80, protocol: detect } ]
---
EOT
    done
}

# pair_view ADMIN SERVICE: "endpoints=N tls=IDENTITY|none" for SERVICE's cluster in the
# proxy's /config_dump, or nothing while the cluster is missing.
pair_view() {
    curl -s --max-time 2 "http://$1/config_dump" 2>/dev/null | python3 -c '
import json, sys
try:
    c = json.load(sys.stdin)["routes"]["clusters"][sys.argv[1] + ".default.svc.cluster.local"]
    print("endpoints=%d tls=%s" % (len(c.get("endpoints") or []), (c.get("tls") or {}).get("identity") or "none"))
except Exception:
    pass
' "$2"
}

# handshakes ADMIN: "ok resumed" — the proxy's outbound mutual TLS handshakes so far
# (tandem_tls_handshakes_total{direction="outbound",result="ok"}, all kinds; resumed ones).
handshakes() {
    curl -s --max-time 2 "http://$1/metrics" 2>/dev/null | awk '
        /^tandem_tls_handshakes_total\{/ && /direction="outbound"/ && /result="ok"/ {
            n += $NF; if (/kind="resumed"/) r += $NF }
        END { printf "%d %d\n", n, r }'
}

PAIR_MESH_APPLIED=0
# start_pair TARGET: pair-plain or pair-mtls.
start_pair() {
    local t=$1 svc token server inbound out view="" want i code hs
    case $t in pair-mtls) svc=$PAIR_TLS ;; *) svc=$PAIR_PLAIN ;; esac
    start_control_plane
    if [[ $PAIR_MESH_APPLIED == 0 ]]; then
        pair_mesh >"$WORK/pair-mesh.yaml"
        ctl_apply "$WORK/pair-mesh.yaml" "the sidecar pairs' services"
        PAIR_MESH_APPLIED=1
        log "applied pair-mesh.yaml ($PAIR_TLS: mutual, $PAIR_PLAIN: disabled; clients $PAIR_TLS-client, $PAIR_PLAIN-client)"
    fi
    # The server sidecar: inbound (mutual TLS or plaintext, per its service) -> bench-upstream.
    token=$(ctl token create --service "$svc" 2>>"$WORK/tandemctl-token.log") && [[ -n $token ]] \
        || { cat "$WORK/tandemctl-token.log" >&2; die "tandemctl token create --service $svc failed"; }
    spawn_tandem "$t-server" --control-plane "$CP_XDS" --identity-addr "$CP_IDENTITY" --token "$token" \
        --service "$svc" --app-port "${UPSTREAM##*:}"
    server=$t-server
    inbound=$(sed -E 's/.* inbound=([^ ]+).*/\1/' <<<"${READY[$server]}")
    PEER_PID[$t]=${MAIN_PID[$server]}
    ctl endpoint add "$svc" "$inbound" >>"$WORK/tandemctl-endpoint.log" 2>&1 \
        || { cat "$WORK/tandemctl-endpoint.log" >&2; die "tandemctl endpoint add $svc $inbound failed"; }
    # The client sidecar: a dedicated outbound listener for $svc (see above).
    token=$(ctl token create --service "$svc-client" 2>>"$WORK/tandemctl-token.log") && [[ -n $token ]] \
        || { cat "$WORK/tandemctl-token.log" >&2; die "tandemctl token create --service $svc-client failed"; }
    spawn_tandem "$t" --control-plane "$CP_XDS" --identity-addr "$CP_IDENTITY" --token "$token" \
        --service "$svc-client" --listen "$svc=127.0.0.1:0"
    i=$(sed -nE "s/.* service\.$svc=([^ ]+).*/\1/p" <<<"${READY[$t]}")
    [[ -n $i ]] || die "$t: no service.$svc= listener in the ready line: ${READY[$t]}"
    URL[$t]="http://$i/"
    H2URL[$t]="http://$i/"
    # Wait (bounded) until the client calls the server's inbound port, over mutual TLS
    # (the cluster names the server identity) or plaintext as the pair requires.
    for ((i = 0; i < 150; i++)); do
        view=$(pair_view "${ADMIN[$t]}" "$svc")
        if [[ $t == pair-mtls ]]; then
            [[ $view == "endpoints=1 tls="* && $view != *"tls=none" ]] && break
        else
            [[ $view == "endpoints=1 tls=none" ]] && break
        fi
        sleep 0.1
    done
    if [[ $t == pair-mtls ]]; then want="endpoints=1 tls=<the server identity>"; else want="endpoints=1 tls=none"; fi
    if [[ $t == pair-mtls && ( $view != "endpoints=1 tls="* || $view == *"tls=none" ) ]] \
        || [[ $t == pair-plain && $view != "endpoints=1 tls=none" ]]; then
        die "$t: the client sidecar's cluster $svc is not ready after 15 s (want $want, /config_dump has ${view:-no such cluster}); see $RAW/$t.err.log and $RAW/$server.err.log"
    fi
    check_tandem "$t"
    # The ordinary sidecar path, by authority on the outbound listener, reaches it too.
    out=$(sed -E 's/.* outbound=([^ ]+).*/\1/' <<<"${READY[$t]}")
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $svc" "http://$out/" || true)
    [[ $code == 200 ]] || die "$t: the client sidecar's outbound listener $out with Host: $svc answered ${code:-nothing}"
    hs=$(handshakes "${ADMIN[$t]}")
    if [[ $t == pair-mtls && ${hs%% *} == 0 ]]; then
        die "$t: requests went through but the client sidecar counted no outbound TLS handshake"
    elif [[ $t == pair-plain && ${hs%% *} != 0 ]]; then
        die "$t: the plaintext pair's client sidecar counted outbound TLS handshakes ($hs)"
    fi
    log "$t: client sidecar $svc-client (pid ${MAIN_PID[$t]}) -> server sidecar $svc at $inbound (pid ${PEER_PID[$t]}) -> upstream; cluster $view; outbound TLS handshakes so far: ${hs%% *}"
}

start_nginx() {
    local p1 p2
    p1=$(free_port); p2=$(free_port)
    mkdir -p "$WORK/nginx-tmp"
    chmod 1777 "$WORK/nginx-tmp"
    cat >"$WORK/nginx.conf" <<EOF
# Generated by benches/run.sh: nginx as a plain reverse proxy to bench-upstream.
daemon off;
master_process on;
worker_processes $WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $WORK/nginx-tmp/body;
    proxy_temp_path $WORK/nginx-tmp/proxy;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
    scgi_temp_path $WORK/nginx-tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream bench_upstream {
        server $UPSTREAM;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$p1;
        listen 127.0.0.1:$p2 http2;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    nginx -t -q -p "$WORK" -e "$WORK/nginx.err.log" -c "$WORK/nginx.conf" \
        || die "nginx rejected its config (see $WORK/nginx.err.log)"
    nginx -p "$WORK" -e "$WORK/nginx.err.log" -c "$WORK/nginx.conf" \
        >"$WORK/nginx.log" 2>&1 &
    PIDS+=($!)
    MAIN_PID[nginx]=$!
    URL[nginx]="http://127.0.0.1:$p1/"
    H2URL[nginx]="http://127.0.0.1:$p2/"
    wait_http "${URL[nginx]}" 10 || die "nginx does not answer on :$p1"
    wait_http "${H2URL[nginx]}" 5 h2 || die "nginx does not answer h2c on :$p2"
    log "nginx at :$p1 (h1) :$p2 (h2c) (master pid ${MAIN_PID[nginx]}, $WORKERS workers)"
}

start_haproxy() {
    local p1 p2
    p1=$(free_port); p2=$(free_port)
    cat >"$WORK/haproxy.cfg" <<EOF
# Generated by benches/run.sh: HAProxy as a plain reverse proxy to bench-upstream.
# No 'log' lines: logging is off.
global
    nbthread $WORKERS
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe_h1
    bind 127.0.0.1:$p1
    default_backend be_upstream
frontend fe_h2
    bind 127.0.0.1:$p2 proto h2
    default_backend be_upstream
backend be_upstream
    server up1 $UPSTREAM
EOF
    haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected its config"
    haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    PIDS+=($!)
    MAIN_PID[haproxy]=$!
    URL[haproxy]="http://127.0.0.1:$p1/"
    H2URL[haproxy]="http://127.0.0.1:$p2/"
    wait_http "${URL[haproxy]}" 10 || die "haproxy does not answer on :$p1"
    wait_http "${H2URL[haproxy]}" 5 h2 || die "haproxy does not answer h2c on :$p2"
    log "haproxy at :$p1 (h1) :$p2 (h2c) (pid ${MAIN_PID[haproxy]}, $WORKERS threads)"
}

# ---------------------------------------------------------------- measurements
# The CPU time and requests of a closed-loop run: records <prefix>_cpu_us (per request)
# for the target's own processes (none for direct) and for the upstream.
# run_closed ROUND TARGET KIND(h1|h2)
run_closed() {
    local round=$1 t=$2 kind=$3
    local raw="$RAW/$kind-$t-r$round.txt"
    local pids up_pids cp_pids=() c0 c1 u0 u1 p0 p1 reqs rps errs hs0="" hs1="" ts1 hs_pid=""
    # shellcheck disable=SC2207
    pids=($(pids_of "$t"))
    # shellcheck disable=SC2207
    up_pids=($(pids_of upstream))
    [[ $t == direct ]] && pids=()
    # The control plane (tandem-routed's, the pairs'): not on the data path, but it shares
    # the cores.
    # shellcheck disable=SC2207
    [[ $t == tandem-routed || $t == pair-* ]] && cp_pids=($(pids_of control-plane))
    wait_quiet
    start_sampler "${pids[@]}"
    # A pair's client sidecar: its outbound TLS handshakes (new connections to the server
    # sidecar) over the whole run and, as the steady-load rate, from HS_RAMP seconds in to
    # the end: the sidecar closes upstream connections idle for 20 s, so a run after a pause
    # (wait_quiet, other targets) opens its pool afresh in its first moments.
    if [[ $t == pair-* ]]; then
        hs0=$(handshakes "${ADMIN[$t]}")
        rm -f "$WORK/hs-mid"
        (sleep "$HS_RAMP"; echo "$(handshakes "${ADMIN[$t]}") $(date +%s.%N)" >"$WORK/hs-mid") &
        hs_pid=$!
        PIDS+=("$hs_pid")
    fi
    c0=$(cpu_ticks "${pids[@]}"); u0=$(cpu_ticks "${up_pids[@]}"); p0=$(cpu_ticks "${cp_pids[@]}")
    if [[ $kind == h1 ]]; then
        timeout $((DURATION + 30)) wrk -t"$H1_THREADS" -c"$H1_CONNS" -d"${DURATION}s" \
            -H "Host: $HOST" "${URL[$t]}" >"$raw" 2>&1 || true
    else
        timeout $((DURATION + 30)) h2load -t"$H2_THREADS" -c"$H2_CONNS" -m"$H2_STREAMS" \
            -D "$DURATION" -H ":authority: $HOST" "${H2URL[$t]}" >"$raw" 2>&1 || true
    fi
    c1=$(cpu_ticks "${pids[@]}"); u1=$(cpu_ticks "${up_pids[@]}"); p1=$(cpu_ticks "${cp_pids[@]}")
    if [[ -n $hs0 ]]; then hs1=$(handshakes "${ADMIN[$t]}"); ts1=$(date +%s.%N); fi
    stop_sampler
    [[ -z $hs_pid ]] || wait "$hs_pid" 2>/dev/null || true
    record "$round" "$t" "${kind}_busy" "$BUSY_MAX"
    DISTURBED=""
    [[ $BUSY_MAX == 0 ]] || DISTURBED="compilers ran during it"
    if [[ $kind == h1 ]]; then
        reqs=$(awk '/requests in/{print $1}' "$raw")
        rps=$(awk '/^Requests\/sec:/{print $2}' "$raw")
        errs=$(awk '/Non-2xx or 3xx/{n+=$NF} /Socket errors/{gsub(",", ""); n+=$4+$6+$8+$10} END{print n+0}' "$raw")
    else
        reqs=$(awk '/^requests:/{print $8}' "$raw")
        rps=$(awk '/^finished in/{print $4}' "$raw")
        # failed + errored + timeout; failed already counts 4xx/5xx answers.
        errs=$(awk '/^requests:/{n+=$10+$12+$14} /^status codes:/{s+=$7+$9} END{print (n > 0 ? n : s)}' "$raw")
    fi
    if [[ -z $reqs || -z $rps || $reqs == 0 ]]; then
        log "  $kind $t: no result (see $raw)"
        record "$round" "$t" "${kind}_errors" 1
        return 0
    fi
    record "$round" "$t" "${kind}_rps" "$rps"
    record "$round" "$t" "${kind}_errors" "$errs"
    local cpu_us up_us rss_max=$RSS_MAX split="" split_u split_s
    up_us=$(per_req "$u0" "$u1" "$reqs" | cut -d' ' -f1)
    record "$round" "$t" "${kind}_upstream_cpu_us" "$up_us"
    [[ ${#cp_pids[@]} == 0 ]] || record "$round" "$t" "${kind}_cp_cpu_us" "$(per_req "$p0" "$p1" "$reqs" | cut -d' ' -f1)"
    if [[ ${#pids[@]} -gt 0 ]]; then
        read -r cpu_us split_u split_s <<<"$(per_req "$c0" "$c1" "$reqs")"
        split="${split_u}+${split_s}"
        record "$round" "$t" "${kind}_cpu_us" "$cpu_us"
        record "$round" "$t" "${kind}_cpu_user_us" "$split_u"
        record "$round" "$t" "${kind}_cpu_sys_us" "$split_s"
        record "$round" "$t" "${kind}_rss_load_kb" "$rss_max"
    fi
    [[ $t == direct ]] && rss_max=n/a
    local hs_note=""
    if [[ -n $hs1 ]]; then
        local hs_new hs_res hs_mid hs_rate
        read -r hs_new hs_res <<<"$(awk -v a="$hs0" -v b="$hs1" 'BEGIN{split(a, x, " "); split(b, y, " "); print y[1] - x[1], y[2] - x[2]}')"
        hs_mid=$(cat "$WORK/hs-mid" 2>/dev/null || true)
        # "ok resumed time" HS_RAMP s in; the steady rate is from there to the end.
        hs_rate=$(awk -v a="$hs_mid" -v b="$hs1" -v tb="$ts1" 'BEGIN{
            if (split(a, x, " ") < 3 || tb <= x[3]) { print "NaN"; exit }
            split(b, y, " "); printf "%.3f", (y[1] - x[1]) / (tb - x[3]) }')
        record "$round" "$t" "${kind}_handshakes" "$hs_new"
        record "$round" "$t" "${kind}_handshakes_resumed" "$hs_res"
        [[ $hs_rate == NaN ]] || record "$round" "$t" "${kind}_handshakes_per_s" "$hs_rate"
        hs_note=", client sidecar outbound TLS handshakes: $hs_new in the run ($hs_res resumed), steady ${hs_rate}/s after the first ${HS_RAMP}s"
    fi
    log "  $kind $t: ${rps} req/s, errors=$errs, proxy cpu/req=${cpu_us:-n/a} µs (user+sys ${split:-n/a}), upstream cpu/req=$up_us µs, rss under load=$rss_max kB, compilers=$BUSY_MAX$hs_note"
}

# run_latency ROUND: one bench-load run over all targets, interleaved in LAT_CHUNK-second
# turns, so that whatever else happens on the machine during it hits every target alike.
run_latency() {
    local round=$1 t line k v lag errs lat_args=()
    local raw="$RAW/lat-r$round.txt"
    for t in "${TARGET_LIST[@]}"; do lat_args+=(--target "$t=${URL[$t]}"); done
    wait_quiet
    start_sampler
    timeout $(((LAT_WARMUP + LAT_DURATION) * ${#TARGET_LIST[@]} + 30)) "$BIN/bench-load" \
        "${lat_args[@]}" --host "$HOST" --rate "$RATE" --duration "$LAT_DURATION" \
        --warmup "$LAT_WARMUP" --connections "$LAT_CONNS" --chunk "$LAT_CHUNK" >"$raw" 2>&1 || true
    stop_sampler
    DISTURBED=""
    [[ $BUSY_MAX == 0 ]] || DISTURBED="compilers ran during it"
    for t in "${TARGET_LIST[@]}"; do
        line=$(grep -m1 "^target=$t " "$raw" || true)
        if [[ -z $line ]]; then
            log "  latency $t: no result (see $raw)"
            record "$round" "$t" lat_errors 1
            continue
        fi
        for kv in $line; do
            k=${kv%%=*}; v=${kv#*=}
            case $k in
                p50_us|p99_us|p999_us|max_us|lag_p50_us|lag_p99_us) record "$round" "$t" "lat_$k" "$v" ;;
            esac
        done
        # The generator needs a few µs of CPU on time; a late p99 means something else had it.
        lag=$(sed -E 's/.*lag_p99_us=([0-9.]+|NaN).*/\1/' <<<"$line")
        if [[ $lag != NaN ]] && awk -v l="$lag" -v m="$LAG_LIMIT_US" 'BEGIN{exit !(l > m)}'; then
            DISTURBED="${DISTURBED:+$DISTURBED; }the generator lagged ${lag} µs at p99 ($t)"
        fi
        errs=$(awk '{for (i = 1; i <= NF; i++) {split($i, a, "="); if (a[1] == "errors" || a[1] == "non2xx" || a[1] == "late") n += a[2]}} END{print n+0}' <<<"$line")
        record "$round" "$t" lat_errors "$errs"
        log "  latency @ $RATE/s: $line"
    done
    for t in "${TARGET_LIST[@]}"; do
        record "$round" "$t" lat_busy "$([[ -n $DISTURBED ]] && echo 1 || echo 0)"
    done
    [[ $BUSY_MAX == 0 ]] || log "  (compilers ran during the latency run: $BUSY_MAX)"
}

# ---------------------------------------------------------------- summary
# Medians per (target, metric) over rounds, as "target metric median" lines.
medians() {
    tail -n +2 "$TSV" | sort -t$'\t' -k2,2 -k3,3 -k4,4g | awk -F'\t' '
        function flush() { if (n) printf "%s %s %s\n", key_t, key_m, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }
        { k = $2 SUBSEP $3; if (k != prev) { flush(); n = 0; prev = k; key_t = $2; key_m = $3 } v[++n] = $4 }
        END { flush() }'
}

summarize() {
    medians >"$OUT/medians.txt"
    local busy_runs
    busy_runs=$(awk -F'\t' '$3 ~ /_busy$/ && $4 > 0 {printf "%s%s r%s %s", sep, $2, $1, $3; sep = ", "}' "$TSV")
    awk -v targets="$TARGETS" -v runs="$RUNS" -v rate="$RATE" -v hs_ramp="$HS_RAMP" '
        { m[$1, $2] = $3; seen[$1, $2] = 1 }
        function has(t, k) { return ((t, k) in seen) }
        function fmt(x, d) { return sprintf("%." d "f", x) }
        function cell(t, k, d, scale) { return has(t, k) ? fmt(m[t, k] / scale, d) : "—" }
        function ratio(t, k, base) { return (t != "direct" || base == "direct") && base != "" && has(t, k) && has(base, k) && m[base, k] > 0 ? fmt(m[t, k] / m[base, k], 2) "×" : "—" }
        # Latency added over direct, in ms.
        function added(t, k) { return (t != "direct" && has(t, k) && has("direct", k)) ? fmt((m[t, k] - m["direct", k]) / 1000, 3) : "—" }
        # One row of the routing-overhead table: tandem, tandem-routed, difference, ratio.
        function row(label, k, d, scale,    a, b) {
            if (!has("tandem", k) || !has("tandem-routed", k)) return
            a = m["tandem", k] / scale; b = m["tandem-routed", k] / scale
            printf "| %s | %s | %s | %+." d "f | %s |\n", label, fmt(a, d), fmt(b, d), b - a, (a > 0 ? fmt(b / a, 3) "×" : "—")
        }
        # One row of the mutual-TLS table: pair-plain, pair-mtls, difference, ratio.
        function prow(label, k, d, scale,    a, b) {
            if (!has("pair-plain", k) || !has("pair-mtls", k)) return
            a = m["pair-plain", k] / scale; b = m["pair-mtls", k] / scale
            printf "| %s | %s | %s | %+." d "f | %s |\n", label, fmt(a, d), fmt(b, d), b - a, (a > 0 ? fmt(b / a, 3) "×" : "—")
        }
        # The goal of issue #5 for one protocol: mTLS throughput ≥ 85 % of plaintext throughput.
        function goal(label, k,    r) {
            if (!has("pair-plain", k) || !has("pair-mtls", k) || m["pair-plain", k] <= 0) return
            r = m["pair-mtls", k] / m["pair-plain", k]
            printf "| %s throughput, mTLS ≥ 85 %% of plaintext | %s %% (%s of %s req/s) | 85 %% | %s |\n", label, fmt(100 * r, 1), fmt(m["pair-mtls", k], 0), fmt(m["pair-plain", k], 0), (r >= 0.85 ? "pass" : "**miss**")
        }
        # Handshake figures of one closed-loop kind, e.g. "0.000/s (50 in the whole run, 8 resumed)".
        function hs(t, kind) {
            if (!has(t, kind "_handshakes")) return "—"
            return cell(t, kind "_handshakes_per_s", 3, 1) "/s (" fmt(m[t, kind "_handshakes"], 0) " in the whole run, " fmt(m[t, kind "_handshakes_resumed"], 0) " resumed)"
        }
        # The better of nginx and HAProxy for a metric (higher is better), or "".
        function best_of(k,    b) {
            b = ""
            if (has("nginx", k)) b = "nginx"
            if (has("haproxy", k) && (b == "" || m["haproxy", k] > m[b, k])) b = "haproxy"
            return b
        }
        END {
            n = split(targets, T, ",")
            bh1 = best_of("h1_rps"); bh2 = best_of("h2_rps")
            print "Medians of " runs " run(s). \"best\" = the better of nginx and HAProxy in this run."
            print ""
            pairs = (index("," targets ",", ",pair-plain,") || index("," targets ",", ",pair-mtls,"))
            print "**Closed loop** (HTTP/1.1: wrk; HTTP/2: h2load). CPU = user+system time of the proxy'"'"'s own processes per completed request." (pairs ? " pair-plain and pair-mtls are two proxies each (client sidecar → server sidecar): their CPU and RSS figures are the sum over both sidecars." : "")
            print ""
            print "| target | HTTP/1.1 req/s | vs direct | vs best | HTTP/2 req/s | vs direct | vs best | CPU µs/req h1 | h1 user+sys | CPU µs/req h2 | errors |"
            print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            for (i = 1; i <= n; i++) {
                t = T[i]
                cs = has(t, "h1_cpu_user_us") ? cell(t, "h1_cpu_user_us", 1, 1) " + " cell(t, "h1_cpu_sys_us", 1, 1) : "—"
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", t,
                    cell(t, "h1_rps", 0, 1), ratio(t, "h1_rps", "direct"), ratio(t, "h1_rps", bh1),
                    cell(t, "h2_rps", 0, 1), ratio(t, "h2_rps", "direct"), ratio(t, "h2_rps", bh2),
                    cell(t, "h1_cpu_us", 1, 1), cs, cell(t, "h2_cpu_us", 1, 1), m[t, "h1_errors"] + m[t, "h2_errors"]
            }
            print ""
            print "**Open loop at " rate " req/s** (HTTP/1.1, bench-load; ms, from the scheduled send time) and **memory** (MB; RSS summed over the proxy'"'"'s processes; PSS splits shared pages)."
            print ""
            print "| target | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | RSS idle | RSS under load | RSS after load | PSS idle | errors |"
            print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            for (i = 1; i <= n; i++) {
                t = T[i]
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", t,
                    cell(t, "lat_p50_us", 3, 1000), cell(t, "lat_p99_us", 3, 1000), cell(t, "lat_p999_us", 3, 1000),
                    added(t, "lat_p50_us"), added(t, "lat_p99_us"), added(t, "lat_p999_us"),
                    cell(t, "rss_idle_kb", 1, 1024), cell(t, "h1_rss_load_kb", 1, 1024), cell(t, "rss_after_kb", 1, 1024),
                    cell(t, "pss_idle_kb", 1, 1024), m[t, "lat_errors"]
            }
            print ""
            print "Reference: upstream CPU per request " cell("direct", "h1_upstream_cpu_us", 1, 1) " µs (h1, direct); latency generator scheduling lag p50/p99 " cell("direct", "lat_lag_p50_us", 0, 1) "/" cell("direct", "lat_lag_p99_us", 0, 1) " µs (direct run; included in every latency, cancels in \"added\")."
            if (has("tandem", "h1_rps") && has("tandem-routed", "h1_rps")) {
                print ""
                print "**Routing overhead**: tandem-routed (xDS from tandem-control-plane; an HTTPRoute of 20 rules, 19 evaluated and missed per request, the last splitting 90/10) against tandem (static config, no routes). Medians."
                print ""
                print "| figure | tandem | tandem-routed | routed − static | routed / static |"
                print "| --- | ---: | ---: | ---: | ---: |"
                row("HTTP/1.1 req/s", "h1_rps", 0, 1)
                row("HTTP/2 req/s", "h2_rps", 0, 1)
                row("CPU µs/req h1", "h1_cpu_us", 2, 1)
                row("CPU µs/req h1, user", "h1_cpu_user_us", 2, 1)
                row("CPU µs/req h1, system", "h1_cpu_sys_us", 2, 1)
                row("CPU µs/req h2", "h2_cpu_us", 2, 1)
                row("latency p50 (ms)", "lat_p50_us", 3, 1000)
                row("latency p99 (ms)", "lat_p99_us", 3, 1000)
                row("RSS idle (MB)", "rss_idle_kb", 1, 1024)
                row("RSS under load (MB)", "h1_rss_load_kb", 1, 1024)
                print ""
                print "Share of tandem-routed'"'"'s requests sent to the 10 % backend over the whole run (its /metrics): " cell("tandem-routed", "split_v2_pct", 1, 1) " %. The control plane'"'"'s own CPU during the routed closed-loop runs (not counted above): " cell("tandem-routed", "h1_cp_cpu_us", 2, 1) " µs/req h1, " cell("tandem-routed", "h2_cp_cpu_us", 2, 1) " µs/req h2."
            }
            if (has("pair-plain", "h1_rps") && has("pair-mtls", "h1_rps")) {
                print ""
                print "**Mutual TLS overhead (issue #5)**: the same sidecar pair (load → client sidecar → server sidecar → bench-upstream; every sidecar holds a workload identity from the control plane) with plaintext between the sidecars (pair-plain: the server service'"'"'s `mtls.mode` is `disabled`) and with mutual TLS 1.3 (pair-mtls: mode `mutual`). A pair is **two proxies**: CPU and RSS are summed over both sidecars. Medians; latency at " rate " req/s."
                print ""
                print "| figure | pair-plain | pair-mtls | mTLS − plain | mTLS / plain |"
                print "| --- | ---: | ---: | ---: | ---: |"
                prow("HTTP/1.1 req/s", "h1_rps", 0, 1)
                prow("HTTP/2 req/s", "h2_rps", 0, 1)
                prow("latency p50 (ms)", "lat_p50_us", 3, 1000)
                prow("latency p99 (ms)", "lat_p99_us", 3, 1000)
                prow("CPU µs/req h1, both sidecars", "h1_cpu_us", 2, 1)
                prow("CPU µs/req h1, user", "h1_cpu_user_us", 2, 1)
                prow("CPU µs/req h1, system", "h1_cpu_sys_us", 2, 1)
                prow("CPU µs/req h2, both sidecars", "h2_cpu_us", 2, 1)
                prow("RSS idle (MB), both sidecars", "rss_idle_kb", 1, 1024)
                prow("RSS under load h1 (MB), both sidecars", "h1_rss_load_kb", 1, 1024)
                print ""
                print "| goal (issue #5) | pair-mtls | bar | result |"
                print "| --- | ---: | ---: | --- |"
                goal("HTTP/1.1", "h1_rps")
                goal("HTTP/2", "h2_rps")
                print ""
                print "New TLS handshakes under steady load (the pair-mtls client sidecar'"'"'s `tandem_tls_handshakes_total{direction=\"outbound\",result=\"ok\"}` from " hs_ramp " s into each closed-loop run to its end, medians; the whole run'"'"'s count includes re-opening the connection pool, whose idle connections close after 20 s between runs): HTTP/1.1 " hs("pair-mtls", "h1") ", HTTP/2 " hs("pair-mtls", "h2") ". Over the whole benchmark (startup, warm-up, every run): " cell("pair-mtls", "handshakes_total", 0, 1) " handshakes, " cell("pair-mtls", "handshakes_resumed_total", 0, 1) " resumed" (has("pair-mtls", "handshakes_total") && m["pair-mtls", "handshakes_total"] > 0 ? " (" fmt(100 * m["pair-mtls", "handshakes_resumed_total"] / m["pair-mtls", "handshakes_total"], 1) " %)" : "") ". pair-plain'"'"'s client sidecar: " hs("pair-plain", "h1") " (h1), expected 0. The control plane'"'"'s CPU during the pairs'"'"' closed-loop runs (not counted above): " cell("pair-mtls", "h1_cp_cpu_us", 2, 1) " µs/req h1 (pair-mtls)."
            }
            # The targets from the issue: tandem against the better of nginx and HAProxy.
            if (!has("tandem", "h1_rps")) exit
            bestadd = ""
            for (j = 1; j <= 2; j++) {
                p = (j == 1) ? "nginx" : "haproxy"
                if (has(p, "lat_p99_us") && has("direct", "lat_p99_us")) {
                    a = m[p, "lat_p99_us"] - m["direct", "lat_p99_us"]
                    if (bestadd == "" || a < bestadd) { bestadd = a; bestaddp = p }
                }
            }
            print ""
            print "| target (from the issue) | tandem | bar | result |"
            print "| --- | ---: | ---: | --- |"
            if (bh1 != "") {
                r = m["tandem", "h1_rps"] / m[bh1, "h1_rps"]
                printf "| HTTP/1.1 throughput ≥ 1.2× best (%s, %s req/s) | %s× | 1.20× | %s |\n", bh1, fmt(m[bh1, "h1_rps"], 0), fmt(r, 2), (r >= 1.2 ? "pass" : "**miss**")
            }
            if (has("tandem", "h1_cpu_us"))
                printf "| CPU per proxied request ≤ 20 µs | %s µs | 20 µs | %s |\n", fmt(m["tandem", "h1_cpu_us"], 1), (m["tandem", "h1_cpu_us"] <= 20 ? "pass" : "**miss**")
            if (bestadd != "" && has("tandem", "lat_p99_us")) {
                a = m["tandem", "lat_p99_us"] - m["direct", "lat_p99_us"]
                printf "| added p99 at %d req/s ≤ best (%s) | %s ms | %s ms | %s |\n", rate, bestaddp, fmt(a / 1000, 3), fmt(bestadd / 1000, 3), (a <= bestadd ? "pass" : "**miss**")
            }
            if (has("tandem", "rss_idle_kb"))
                printf "| idle RSS ≤ 10 MB | %s MB | 10 MB | %s |\n", fmt(m["tandem", "rss_idle_kb"] / 1024, 1), (m["tandem", "rss_idle_kb"] <= 10240 ? "pass" : "**miss**")
        }' "$OUT/medians.txt" >"$OUT/summary.md"
    if [[ -n $busy_runs ]]; then
        printf '\n**Warning:** still disturbed after %s retries (compilers ran, or the latency generator was starved of CPU): %s. Those figures are skewed by other work on the machine.\n' "$RETRIES" "$busy_runs" >>"$OUT/summary.md"
    fi
}

# ---------------------------------------------------------------- main
ensure_tools

cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release"
TANDEM="$BIN/tandem-proxy"
if [[ $BUILD == 0 ]]; then
    log "not building: using the release binaries in $BIN as they are"
else
    log "building (release)"
    if needs_cp; then
        cargo build --release -q -p tandem-proxy -p tandem-control-plane -p tandemctl -p tandem-benches \
            || die "cargo build failed; to benchmark without tandem: $0 --targets direct,nginx,haproxy"
    elif has_target tandem; then
        cargo build --release -q -p tandem-proxy -p tandem-benches \
            || die "cargo build failed; to benchmark without tandem-proxy: $0 --targets direct,nginx,haproxy"
    else
        cargo build --release -q -p tandem-benches
    fi
fi

busy=$(compilers)
{
    echo "date: $(date -Is)"
    echo "command: $0 --runs $RUNS --targets $TARGETS --duration $DURATION --lat-duration $LAT_DURATION --rate $RATE"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none) $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) uncommitted paths"
    [[ $BUILD == 1 ]] || echo "binaries: not rebuilt (--no-build); $(cd "$BIN" && ls -l --time-style=+%Y-%m-%dT%H:%M:%S tandem-proxy tandem-control-plane bench-upstream bench-load 2>/dev/null | awk '{printf "%s %s; ", $7, $6}')"
    echo "kernel: $(uname -sr)"
    echo "cpu: $(nproc) × $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "compilers running before: $busy"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*\///')"
    echo "haproxy: $(haproxy -v 2>/dev/null | awk 'NR==1{print $3}')"
    echo "wrk: $(wrk -v 2>&1 | awk 'NR==1{print $2}')"
    echo "h2load: $(h2load --version 2>/dev/null | awk '{print $NF}')"
    echo "rustc: $(rustc --version)"
    has_pair && echo "pair-plain, pair-mtls: load -> client sidecar ($PAIR_PLAIN-client / $PAIR_TLS-client; its --listen outbound listener for the server service) -> server sidecar ($PAIR_PLAIN: mtls mode disabled / $PAIR_TLS: mode mutual; its inbound port) -> bench-upstream; all four proxies hold identities (join tokens) from one tandem-control-plane, xDS over mutual TLS; CPU and RSS are both sidecars of a pair"
    has_target tandem-routed && echo "tandem-routed: xDS from tandem-control-plane; HTTPRoute of $ROUTED_RULES rules, 19 evaluated and missed per request, the last splitting 90/10 between $HOST-v1 and $HOST-v2 (both: the one bench-upstream)"
    echo "settings: wrk -t$H1_THREADS -c$H1_CONNS; h2load -t$H2_THREADS -c$H2_CONNS -m$H2_STREAMS; latency $RATE req/s over $LAT_CONNS connections per target, ${LAT_DURATION}s after ${LAT_WARMUP}s warm-up per target, targets interleaved in ${LAT_CHUNK}s turns; $WORKERS workers per proxy and upstream"
} >"$OUT/meta.txt"
[[ $busy == 0 ]] || log "warning: $busy compiler processes are running; figures will be skewed"

# Run copies, so a rebuild (or another session's cleanup by path) during the run cannot
# swap or stop what is being measured.
mkdir -p "$WORK/bin"
cp "$BIN/bench-upstream" "$BIN/bench-load" "$WORK/bin/"
has_tandem && cp "$TANDEM" "$WORK/bin/"
needs_cp && cp "$BIN/tandem-control-plane" "$BIN/tandemctl" "$WORK/bin/"
BIN="$WORK/bin"
TANDEM="$BIN/tandem-proxy"
CONTROL_PLANE="$BIN/tandem-control-plane"
TANDEMCTL="$BIN/tandemctl"
# Flags every tandem target gets: the same thread count as nginx's workers and HAProxy's
# threads, where the flag exists.
TANDEM_FLAGS=()
if has_tandem && "$TANDEM" --help 2>/dev/null | grep -q -- '--workers'; then
    TANDEM_FLAGS=(--workers "$WORKERS")
fi

start_upstream
has_target tandem && start_tandem
has_target tandem-routed && start_tandem_routed
has_target pair-plain && start_pair pair-plain
has_target pair-mtls && start_pair pair-mtls
has_target nginx && start_nginx
has_target haproxy && start_haproxy

sleep 1
for t in "${TARGET_LIST[@]}"; do
    [[ $t == direct ]] && continue
    # shellcheck disable=SC2207
    pids=($(pids_of "$t"))
    record 0 "$t" rss_idle_kb "$(mem_kb VmRSS "${pids[@]}")"
    record 0 "$t" pss_idle_kb "$(mem_kb Pss "${pids[@]}")"
    cat "$WORK/pending" >>"$TSV"; : >"$WORK/pending"
    log "$t idle: RSS $(mem_kb VmRSS "${pids[@]}") kB, PSS $(mem_kb Pss "${pids[@]}") kB over ${#pids[@]} process(es)"
done

log "warm-up: ${WARMUP}s per target"
for t in "${TARGET_LIST[@]}"; do
    timeout $((WARMUP + 20)) wrk -t"$H1_THREADS" -c"$H1_CONNS" -d"${WARMUP}s" -H "Host: $HOST" "${URL[$t]}" >/dev/null 2>&1 || true
    timeout $((WARMUP + 20)) h2load -t"$H2_THREADS" -c"$H2_CONNS" -m"$H2_STREAMS" -D "$WARMUP" -H ":authority: $HOST" "${H2URL[$t]}" >/dev/null 2>&1 || true
done

for ((r = 1; r <= RUNS; r++)); do
    log "round $r/$RUNS"
    for t in "${TARGET_LIST[@]}"; do
        measured run_closed "$r" "$t" h1
        measured run_closed "$r" "$t" h2
    done
    measured run_latency "$r"
done

sleep 2
for t in "${TARGET_LIST[@]}"; do
    [[ $t == direct ]] && continue
    # shellcheck disable=SC2207
    pids=($(pids_of "$t"))
    record 0 "$t" rss_after_kb "$(mem_kb VmRSS "${pids[@]}")"
    cat "$WORK/pending" >>"$TSV"; : >"$WORK/pending"
done
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.txt"
if has_target tandem-routed; then
    split=$(routed_split)
    echo "tandem-routed split over the whole run: $split" >>"$OUT/meta.txt"
    log "tandem-routed split over the whole run: $split"
    v2=$(grep -oE "$HOST-v2=[0-9.]+" <<<"$split" | cut -d= -f2 || true)
    record 0 tandem-routed split_v2_pct "${v2:-0}"
    cat "$WORK/pending" >>"$TSV"; : >"$WORK/pending"
fi

if has_target pair-mtls; then
    hs=$(handshakes "${ADMIN[pair-mtls]}")
    echo "pair-mtls client sidecar outbound TLS handshakes over the whole run (ok, resumed): $hs" >>"$OUT/meta.txt"
    record 0 pair-mtls handshakes_total "${hs%% *}"
    record 0 pair-mtls handshakes_resumed_total "${hs##* }"
    cat "$WORK/pending" >>"$TSV"; : >"$WORK/pending"
fi

summarize
ln -sfn "$STAMP" "$ROOT/benches/results/latest"
echo
cat "$OUT/summary.md"
echo
log "raw results in $OUT"
