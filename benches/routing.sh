#!/usr/bin/env bash
# benches/routing.sh: the route matching micro-benchmark (criterion, benches/benches/route_match.rs).
#
# Measures, per request, Destination::route + Route::pick_backend + Cluster::pick for route
# tables of 10, 20, 100 and 1,000 routes (worst case: only the last route matches; typical:
# the route at N/2 does), the pieces alone (90/10 weighted pick, P2C pick, destination
# lookup), and compiling the table. Prints one "name ns/op" line per benchmark at the end and
# keeps criterion's full output in benches/results/routing-<time>/.
#
# Usage: benches/routing.sh [criterion arguments, e.g. a filter such as 'route/last']
set -euo pipefail

case "${1:-}" in
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/benches/results/routing-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
cd "$ROOT"
{
    echo "date: $(date -Is)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo none) $(git status --porcelain 2>/dev/null | wc -l) uncommitted paths"
    echo "cpu: $(nproc) × $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc: $(rustc --version)"
} >"$OUT/meta.txt"

timeout 1800 cargo bench -q -p tandem-benches --bench route_match -- "$@" 2>&1 | tee "$OUT/criterion.txt"
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.txt"

# Criterion prints "name  time: [low estimate high]", sometimes with the name on its own line.
awk '
    function ns(v, u) { return u == "ps" ? v / 1000 : u == "ns" ? v : u == "µs" ? v * 1000 : u == "ms" ? v * 1e6 : v * 1e9 }
    /^[a-z_]+\/[^ ]+/ { name = $1 }
    /time:/ { for (i = 1; i <= NF; i++) if ($i == "time:") { printf "%-40s %12.1f ns/op\n", name, ns($(i + 3), $(i + 4)) } }
' "$OUT/criterion.txt" | tee "$OUT/summary.txt"
echo "results in $OUT" >&2
