#!/usr/bin/env bash
# The test command (README "Quick start"): installs what the tests need and
# runs them all. Idempotent; safe to run again.
#
#   - a Python virtualenv with the real fedmsg 1.1.7 from PyPI (pinned), for
#     the interoperability tests, in .venv-fedmsg (or $PYTHON_FEDMSG_VENV);
#   - then every Rust test: unit tests and the integration binary
#     (real sockets on 127.0.0.1, real processes of our binaries and of
#     Python fedmsg).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PYTHON_FEDMSG_VENV:-$PWD/.venv-fedmsg}"
setup="../shared/reference/python-fedmsg/setup-venv.sh"
if [ ! -x "$venv/bin/fedmsg-tail" ]; then
  if [ ! -f "$setup" ]; then
    echo "test.sh: $setup not found (the shared/ reference folder must sit next to this checkout)" >&2
    exit 2
  fi
  echo "test.sh: building the Python fedmsg venv in $venv" >&2
  bash "$setup" "$venv" >&2
fi
export PYTHON_FEDMSG_VENV="$venv"

# The example consumer runs as a process in the tests; `cargo test` builds
# examples only as test harnesses, so build the real binaries first.
cargo build --examples
cargo test --all-targets "$@"
