#!/usr/bin/env bash
# The whole test suite: host tier on this kernel, then the kernel tier (TIPC, kTLS,
# handshake...) inside one VM boot of debian-6.12. Nothing is skipped silently: if the
# VM tier cannot run, this fails with the reason, unless LABKIT_NO_VM=1 opts out.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

echo "== host tier (kernel $(uname -r))"
.venv/bin/python -m pytest -m "not kernel" tests "$@"
host=$?

if [ "${LABKIT_NO_VM:-0}" = 1 ]; then
  echo "== kernel tier NOT RUN: LABKIT_NO_VM=1 was set (explicit opt-out)"
  exit $host
fi
echo "== kernel tier (in a debian-6.12 VM)"
start=$(date +%s)
.venv/bin/labkit vm run --kernel debian-6.12 --memory 2G -- \
  .venv/bin/python -m pytest -m kernel tests -p no:cacheprovider "$@"
kernel=$?
echo "== kernel tier took $(( $(date +%s) - start )) s (exit $kernel)"
if [ $kernel = 5 ]; then
  echo "kernel tier collected no tests: that is a failure, not a pass" >&2
fi
[ $host = 0 ] && [ $kernel = 0 ]
