#!/usr/bin/env bash
# The whole test suite: host tier on this kernel and, beside it, the kernel tier (TIPC,
# kTLS, handshake...) inside a VM, once per kernel labkit fetches (debian-6.12, debian-7.2, then
# Debian 12's own debian-6.1). Nothing is skipped silently: tests that need what a kernel lacks say
# so by name, and if the VM tier cannot run at all this fails with the reason, unless
# LABKIT_NO_VM=1 opts out. Where the machine's own kernel has the features (the Vagrant
# box), LABKIT_NATIVE_KERNEL=1 runs the kernel tier here instead of in VMs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

# Lint first: it takes a second and a style slip should not cost a 30-minute run.
echo "== ruff"
.venv/bin/ruff check . || exit 1

# Every VM boot of the run (host tier and kernel tier) appends a line here; printed at the end.
mkdir -p test-artifacts
export LABKIT_BOOT_LOG="$PWD/test-artifacts/boots.log"
: > "$LABKIT_BOOT_LOG"
boots_summary() {
  echo "== VM boots in this run: $(wc -l < "$LABKIT_BOOT_LOG") ($(.venv/bin/python - "$LABKIT_BOOT_LOG" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(", ".join(f"{k}: {n}" for k, n in sorted(collections.Counter(l["kernel"].rsplit("/", 1)[-1] for l in lines).items())) or "none")
PY
))"
}
trap boots_summary EXIT

kernel_tier() {
  # The kernel tier, once per kernel, in a VM each; exit status 0 only if all passed.
  local status=0 second=0 kernel start rc
  for kernel in ${LABKIT_TEST_KERNELS:-debian-6.12 debian-7.2 debian-6.1}; do
    echo "== kernel tier (in a $kernel VM)"
    start=$(date +%s)
    .venv/bin/labkit vm run --kernel "$kernel" --memory 2G -- \
      env LABKIT_SECOND_KERNEL=$second LABKIT_ALL_KERNELS="${LABKIT_ALL_KERNELS:-0}" \
      .venv/bin/python -m pytest -m kernel --durations=15 tests/kernel -p no:cacheprovider "$@"
    rc=$?
    echo "== kernel tier on $kernel took $(( $(date +%s) - start )) s (exit $rc)"
    if [ $rc = 5 ]; then
      echo "kernel tier collected no tests on $kernel: that is a failure, not a pass" >&2
    fi
    [ $rc = 0 ] || status=1
    second=1  # after the first kernel, modules that are the same on every kernel skip
  done
  return $status
}

if [ "${LABKIT_NATIVE_KERNEL:-0}" = 1 ]; then
  echo "== host tier (kernel $(uname -r))"
  .venv/bin/python -m pytest -m "not kernel" --durations=25 tests "$@"
  host=$?
  echo "== kernel tier (natively, on $(uname -r))"
  .venv/bin/python -m pytest -m kernel --durations=15 tests/kernel -p no:cacheprovider "$@"
  kernel=$?
  [ $host = 0 ] && [ $kernel = 0 ]
  exit
fi

# The kernel tier's VMs and the host tier run side by side: most of the host tier waits
# on its own VMs or on namespaces, so on two cores the two overlap well (CI time: ~50 min
# one after the other). LABKIT_SERIAL_TIERS=1 runs them one after the other, as before.
kernel_log=""
if [ "${LABKIT_NO_VM:-0}" != 1 ] && [ "${LABKIT_SERIAL_TIERS:-0}" != 1 ]; then
  mkdir -p test-artifacts
  kernel_log=test-artifacts/kernel-tier.log
  echo "== kernel tier started in the background (its output follows the host tier's; live: $kernel_log)"
  ( kernel_tier "$@" > "$kernel_log" 2>&1; echo $? > "$kernel_log.rc" ) &
  kernel_pid=$!
  # on Ctrl-C or TERM: `labkit vm run` under the subshell stops its VM on TERM
  trap 'pkill -TERM -P "$kernel_pid" 2>/dev/null; kill "$kernel_pid" 2>/dev/null; exit 130' INT TERM
fi

start=$(date +%s)
echo "== host tier (kernel $(uname -r))"
.venv/bin/python -m pytest -m "not kernel" --durations=25 tests "$@"
host=$?
echo "== host tier took $(( $(date +%s) - start )) s (exit $host)"

if [ "${LABKIT_NO_VM:-0}" = 1 ]; then
  echo "== kernel tier NOT RUN: LABKIT_NO_VM=1 was set (explicit opt-out)"
  exit $host
fi
if [ -n "$kernel_log" ]; then
  wait "$kernel_pid"
  cat "$kernel_log"
  kernel=$(cat "$kernel_log.rc" 2>/dev/null || echo 1)
else
  kernel_tier "$@"
  kernel=$?
fi
[ $host = 0 ] && [ "$kernel" = 0 ]
