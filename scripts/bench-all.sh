#!/usr/bin/env bash
# Runs every scenario of the benchmark table (docs/benchmarks.md) with
# fedmsg-bench, the Python comparison, then draws the chart and prints the
# table with each row's target.
#
#   scripts/bench-all.sh [--quick] [--soak] [OUTDIR]
#
#   --quick  tiny counts: checks the tooling (CI runs this), not the speed
#   --soak   also the relay under 10 million messages, paced at 100k msg/s
#            (judged) and flat out (shown), about 3 minutes
#   OUTDIR   where the JSON results and benchmarks.svg go
#            (default target/bench-results)
#
# Needs the Python fedmsg venv (scripts/test.sh builds it in .venv-fedmsg, or
# set PYTHON_FEDMSG_VENV). Builds the release binaries unless BENCH_BINARY
# names an fedmsg-bench (its fedmsg-tail, fedmsg-relay and fedmsg-logger
# must sit next to it).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
soak=0
out=target/bench-results
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --soak) soak=1 ;;
    -*) echo "bench-all.sh: unknown option $arg" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
mkdir -p "$out"
bench="${BENCH_BINARY:-}"
if [ -z "$bench" ]; then
  cargo build -q --release --bins
  bench="$PWD/target/release/fedmsg-bench"
fi
# n BIG SMALL: the count for this mode.
n() { if [ "$quick" = 1 ]; then echo "$2"; else echo "$1"; fi; }

run() {
  local name="$1"; shift
  echo "bench-all.sh: $name: fedmsg-bench $*" >&2
  printf '%s\n' "$*" > "$out/$name.args"
  "$bench" "$@" --json > "$out/$name.json"
}

run unsigned-1to1   -n "$(n 200000 300)" --baseline
run paced-direct    -n "$(n 50000 200)" --rate 10000 --baseline
run paced-relay     -n "$(n 50000 200)" --rate 10000 --relay --baseline
run ed25519         -n "$(n 50000 100)" --sign ed25519
run x509            -n "$(n 5000 20)" --sign x509
run relay-flat      -n "$(n 200000 300)" --relay --baseline
run fanout-20       -n "$(n 20000 50)" --subscribers 20 --baseline
run tail-json       -n "$(n 300000 300)" --processes --baseline
run oneshot         --oneshot -n "$(n 100 3)"
run endpoints-1000  --publishers "$(n 1000 20)" -n 1 --processes
if [ "$soak" = 1 ]; then
  run relay-soak    -n "$(n 10000000 1000)" --rate 100000 --relay --processes
  run relay-soak-flat -n "$(n 10000000 1000)" --relay --processes
fi
echo "bench-all.sh: python: scripts/compare.sh $(n 20000 300) 1" >&2
BENCH_BINARY="$bench" scripts/compare.sh "$(n 20000 300)" 1 > "$out/python.md"
python3 scripts/chart.py "$out"
