#!/usr/bin/env bash
# The whole test suite: host tier on this kernel, then the kernel tier (TIPC, kTLS,
# handshake...) inside a VM, once per kernel labkit fetches (debian-6.12, then Debian 12's
# own debian-6.1). Nothing is skipped silently: tests that need what a kernel lacks say
# so by name, and if the VM tier cannot run at all this fails with the reason, unless
# LABKIT_NO_VM=1 opts out. Where the machine's own kernel has the features (the Vagrant
# box), LABKIT_NATIVE_KERNEL=1 runs the kernel tier here instead of in VMs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

echo "== host tier (kernel $(uname -r))"
.venv/bin/python -m pytest -m "not kernel" --durations=25 tests "$@"
host=$?

if [ "${LABKIT_NATIVE_KERNEL:-0}" = 1 ]; then
  echo "== kernel tier (natively, on $(uname -r))"
  .venv/bin/python -m pytest -m kernel --durations=15 tests -p no:cacheprovider "$@"
  kernel=$?
  [ $host = 0 ] && [ $kernel = 0 ]
  exit
fi
if [ "${LABKIT_NO_VM:-0}" = 1 ]; then
  echo "== kernel tier NOT RUN: LABKIT_NO_VM=1 was set (explicit opt-out)"
  exit $host
fi
status=$host
second=0  # after the first kernel, modules that are the same on every kernel say so and skip
for kernel in ${LABKIT_TEST_KERNELS:-debian-6.12 debian-6.1}; do
  echo "== kernel tier (in a $kernel VM)"
  start=$(date +%s)
  .venv/bin/labkit vm run --kernel "$kernel" --memory 2G -- \
    env LABKIT_SECOND_KERNEL=$second LABKIT_ALL_KERNELS="${LABKIT_ALL_KERNELS:-0}" \
    .venv/bin/python -m pytest -m kernel --durations=15 tests -p no:cacheprovider "$@"
  rc=$?
  echo "== kernel tier on $kernel took $(( $(date +%s) - start )) s (exit $rc)"
  if [ $rc = 5 ]; then
    echo "kernel tier collected no tests on $kernel: that is a failure, not a pass" >&2
  fi
  [ $rc = 0 ] || status=1
  second=1
done
exit $status
