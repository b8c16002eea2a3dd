#!/usr/bin/env bash
# Runs the same 1 publisher -> 1 subscriber scenario with Python fedmsg 1.1.7
# and with fedmsg-rs, alternating, and prints a Markdown table.
#
#   scripts/compare.sh [MESSAGES] [ROUNDS]     (defaults: 20000, 3)
#
# Needs the Python fedmsg venv (scripts/test.sh builds it in .venv-fedmsg, or
# set PYTHON_FEDMSG_VENV) and builds fedmsg-bench in release mode (or uses
# $BENCH_BINARY). Figures
# only compare within one run: this machine is noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-20000}"
rounds="${2:-3}"
size=300
venv="${PYTHON_FEDMSG_VENV:-$PWD/.venv-fedmsg}"
[ -x "$venv/bin/python" ] || { echo "compare.sh: no Python fedmsg venv at $venv (run scripts/test.sh first)" >&2; exit 2; }
# BENCH_BINARY: an already built fedmsg-bench (the tests pass theirs).
bench="${BENCH_BINARY:-}"
if [ -z "$bench" ]; then
  cargo build -q --release --bin fedmsg-bench
  bench="$PWD/target/release/fedmsg-bench"
fi
script="$PWD/scripts/python_bench.py"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$work/fedmsg.d"
cat > "$work/fedmsg.d/bench.py" <<PY
config = dict(
    topic_prefix='org.fedoraproject',
    environment='dev',
    endpoints={'pybench.host': ['tcp://127.0.0.1:$port']},
    sign_messages=False,
    validate_signatures=False,
    high_water_mark=0,
)
PY

python_round() {
  rm -f "$work/ready" && mkfifo "$work/ready"
  (cd "$work" && PYTHONUNBUFFERED=1 "$venv/bin/python" "$script" sub "$messages" 60 "$work/ready" > "$work/sub.out" 2> "$work/sub.err") &
  local sub=$!
  # Wait until the subscriber is about to connect; fedmsg's publisher then
  # sleeps 0.5 s (post_init_sleep) before it sends, as fedmsg always does.
  read -r _ < "$work/ready"
  (cd "$work" && "$venv/bin/python" "$script" pub "$messages" "$size" 2> "$work/pub.err")
  wait "$sub"
  read -r received seconds < "$work/sub.out"
  python3 -c "import sys; r, s = int(sys.argv[1]), float(sys.argv[2]); print(f'{r / s if s > 0 else 0:.0f} {int(sys.argv[3]) - r}')" "$received" "$seconds" "$messages"
}

ours_round() {
  "$bench" -n "$messages" --size "$size" --json | python3 -c 'import json, sys; r = json.load(sys.stdin)[-1]; print("%.0f %d" % (r["msgs_per_sec"], r["lost"]))'
}

echo "| round | Python fedmsg 1.1.7 msg/s (lost) | fedmsg-rs msg/s (lost) | ratio |"
echo "|---|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  read -r py_rate py_lost < <(python_round)
  read -r rs_rate rs_lost < <(ours_round)
  ratio="$(python3 -c "import sys; p = float(sys.argv[1]); print(f'{float(sys.argv[2]) / p:.1f}' if p > 0 else '-')" "$py_rate" "$rs_rate")"
  echo "| $round | $py_rate ($py_lost) | $rs_rate ($rs_lost) | $ratio |"
done
echo
echo "1 publisher -> 1 subscriber, $messages messages of $size bytes payload, unsigned, loopback; $(date -u +%Y-%m-%d)."
