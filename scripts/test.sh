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
# The layer contract (.importlinter): hosts/ never imports lab/, the VM machinery only
# through labkit.hosts' facades. Two seconds; a layering slip fails here, not in review.
echo "== import layers"
.venv/bin/lint-imports || exit 1

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
# The machine's CPU over the run (/proc/stat): how busy it was says whether the run waits
# (idle cores) or computes (a run that keeps both cores busy is as short as its work).
read -r _ cpu_start < <(head -1 /proc/stat)
started_at=$(date +%s)
cpu_summary() {
  local now busy total
  read -r _ now < <(head -1 /proc/stat)
  read -r busy total < <(awk -v a="$cpu_start" -v b="$now" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= 8 && i <= n; i++) { d = y[i] - x[i]; t += d; if (i != 4 && i != 5) u += d }
    print u, t }')
  local hz cores wall
  hz=$(getconf CLK_TCK); cores=$(nproc); wall=$(( $(date +%s) - started_at ))
  echo "== CPU over the run: $(( busy / hz / 60 )) core-min busy in $(( wall / 60 )) min on $cores cores ($(( 100 * busy / (total > 0 ? total : 1) ))% busy)"
}
run_summary() {
  boots_summary
  cpu_summary
  # where the host tier's time went, per module and process (its JUnit files; the kernel
  # tier's slowest tests are in its logs: what a guest writes to this tree is not kept)
  .venv/bin/python scripts/module_times.py --top 8 test-artifacts/junit-*.xml 2>/dev/null
}
rm -f test-artifacts/junit-*.xml
trap run_summary EXIT

# The kernel tier's pytest loads none of the plugins it does not use: hypothesis's and
# anyio's import ~5 s of Python on a loaded host, which a TCG guest pays ~35 times over.
KERNEL_PYTEST=(-m kernel -p no:cacheprovider -p no:hypothesispytest -p no:anyio
               -p no:platformdirs)

kill_tree() {
  # TERM to a process and all its descendants, deepest first (`labkit vm run` stops its VM).
  local child
  for child in $(pgrep -P "$1"); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null
}

kernel_one() {
  # One kernel's tier in a VM of its own, output to $3; exit status its pytest's.
  # A guest kernel that crashes under TCG (CI-like run ci11: debian-7.2, "Oops: int3" in
  # ktime_get 41 s into the boot, before any test ran) fails no test of labkit's: the tier
  # runs once more in a fresh VM, and the log says so. A second crash is a failure.
  local kernel=$1 second=$2 log=$3 start rc try attempt crashed
  start=$(date +%s)
  : > "$log"
  for try in 1 2; do
    attempt=$(mktemp)
    {
      echo "== kernel tier (in a $kernel VM)"
      .venv/bin/labkit vm run --kernel "$kernel" --memory 2G -- \
        env LABKIT_SECOND_KERNEL="$second" LABKIT_ALL_KERNELS="${LABKIT_ALL_KERNELS:-0}" \
        .venv/bin/python -m pytest "${KERNEL_PYTEST[@]}" --durations=15 tests/kernel "${@:4}"
    } > "$attempt" 2>&1
    rc=$?
    cat "$attempt" >> "$log"
    crashed=$(grep -c "^The kernel crashed:" "$attempt")
    rm -f "$attempt"
    [ $rc != 0 ] && [ $try = 1 ] && [ "$crashed" != 0 ] || break
    echo "== the $kernel guest kernel crashed (above), not a test: its tier runs once more in a fresh VM" >> "$log"
  done
  {
    echo "== kernel tier on $kernel took $(( $(date +%s) - start )) s (exit $rc)"
    if [ $rc = 5 ]; then
      echo "kernel tier collected no tests on $kernel: that is a failure, not a pass" >&2
    fi
  } >> "$log" 2>&1
  return $rc
}

kernel_tier() {
  # The kernel tier, once per kernel, in a VM each; exit status 0 only if all passed.
  # The first kernel runs everything; after it, modules that are the same on every kernel
  # skip by design (LABKIT_SECOND_KERNEL=1). The kernels run in LABKIT_KERNEL_LANES lanes
  # side by side (default 2: the first kernel in one, the others one after the other in
  # the second), so both cores work to the end of the run; each kernel writes its own log
  # (live: test-artifacts/kernel-tier-KERNEL.log), printed here in order when all are done.
  local kernels=(${LABKIT_TEST_KERNELS:-debian-6.12 debian-7.2 debian-6.1})
  local lanes=${LABKIT_KERNEL_LANES:-2} lane i pids=() status=0 kernel
  mkdir -p test-artifacts
  rm -f test-artifacts/kernel-tier-*.log test-artifacts/kernel-tier-*.rc
  # The guests see this tree read-only: pytest's assertion-rewritten test modules must be
  # cached by the host (a second on the host), or each guest rewrites and compiles them all
  # again under TCG. setup.sh byte-compiles labkit itself.
  env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m pytest "${KERNEL_PYTEST[@]}" \
    --collect-only -q tests/kernel > /dev/null 2>&1
  for (( lane = 0; lane < lanes; lane++ )); do
    (
      for i in "${!kernels[@]}"; do
        if (( lanes == 1 || (i == 0 ? 0 : 1 + (i - 1) % (lanes - 1)) == lane )); then
          kernel_one "${kernels[$i]}" $(( i > 0 )) "test-artifacts/kernel-tier-${kernels[$i]}.log" "$@"
          echo $? > "test-artifacts/kernel-tier-${kernels[$i]}.rc"
        fi
      done
    ) &
    pids+=($!)
  done
  echo "== kernel tier: ${kernels[*]} in $lanes lane(s) side by side"
  wait "${pids[@]}"
  for kernel in "${kernels[@]}"; do
    cat "test-artifacts/kernel-tier-$kernel.log"
    [ "$(cat "test-artifacts/kernel-tier-$kernel.rc" 2>/dev/null)" = 0 ] || status=1
  done
  return $status
}

if [ "${LABKIT_NATIVE_KERNEL:-0}" = 1 ]; then
  echo "== host tier (kernel $(uname -r))"
  .venv/bin/python -m pytest -m "not kernel" --durations=25 tests "$@"
  host=$?
  echo "== kernel tier (natively, on $(uname -r))"
  .venv/bin/python -m pytest "${KERNEL_PYTEST[@]}" --durations=15 tests/kernel "$@"
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
  echo "== kernel tier started in the background (its output follows the host tier's; live: test-artifacts/kernel-tier-*.log)"
  ( kernel_tier "$@" > "$kernel_log" 2>&1; echo $? > "$kernel_log.rc" ) &
  kernel_pid=$!
  # on Ctrl-C or TERM: every `labkit vm run` under the subshell stops its VM on TERM
  trap 'kill_tree "$kernel_pid"; exit 130' INT TERM
fi

# The host tier runs as three pytest processes side by side. "side": the slow modules
# that need neither the session's shared VM nor a quiet machine-wide state (real kernel
# downloads, repro runs that boot fresh VMs of their own, a real browser, module builds,
# every truncation of the TIPC captures), the debian-7.2 exercise (its own VM) and the
# feature labs' exercises; "notebooks": every notebook, top to bottom. Both hold the
# debian-6.12 VM through a holder lab of their own, as the main process does, so all three
# share one VM. In CI-like runs ci10-ci13, with two processes, the main one ran 6-11 min
# alone on a half-idle CPU after everything else had ended. Their output follows the
# main process's (live: test-artifacts/host-GROUP.log). LABKIT_HOST_SPLIT=0: one process.
HOST_SIDE=(tests/host/test_kernel_catalogue.py tests/host/test_repro_vm.py
           tests/host/test_repro_rerun.py tests/host/test_browser.py
           tests/host/test_offload_kmod.py tests/host/test_tipc_packets.py
           tests/host/test_exercises_ktls.py tests/host/test_exercises_labs.py)
HOST_NOTEBOOKS=(tests/host/test_notebooks.py)
start=$(date +%s)
group_pids=()
group_names=()
host_group() {
  # host_group NAME MODULES...: one more pytest process of the host tier, in the background
  local name=$1
  shift
  local -a modules=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do modules+=("$1"); shift; done
  shift
  echo "== host tier, $name (in the background; live: test-artifacts/host-$name.log)"
  ( .venv/bin/python -m pytest -m "not kernel" --durations=10 \
      --junitxml="test-artifacts/junit-host-$name.xml" "${modules[@]}" "$@" \
      > "test-artifacts/host-$name.log" 2>&1; echo $? > "test-artifacts/host-$name.rc" ) &
  group_pids+=($!)
  group_names+=("$name")
}
ignored=()
if [ "${LABKIT_HOST_SPLIT:-1}" != 0 ]; then
  mkdir -p test-artifacts
  host_group side "${HOST_SIDE[@]}" -- "$@"
  host_group notebooks "${HOST_NOTEBOOKS[@]}" -- "$@"
  ignored=("${HOST_SIDE[@]}" "${HOST_NOTEBOOKS[@]}")
  trap 'for p in "${group_pids[@]}"; do kill_tree "$p"; done; [ -z "$kernel_log" ] || kill_tree "$kernel_pid"; exit 130' INT TERM
fi
echo "== host tier (kernel $(uname -r))"
.venv/bin/python -m pytest -m "not kernel" --durations=25 \
  --junitxml=test-artifacts/junit-host.xml tests "$@" \
  $([ ${#ignored[@]} = 0 ] || printf -- '--ignore=%s ' "${ignored[@]}")
host=$?
for i in "${!group_pids[@]}"; do
  name=${group_names[$i]}
  wait "${group_pids[$i]}"
  echo "== host tier, $name"
  cat "test-artifacts/host-$name.log"
  rc=$(cat "test-artifacts/host-$name.rc" 2>/dev/null || echo 1)
  # a -k or -m of the caller's may leave a group nothing to run: that is not a failure
  [ "$rc" = 5 ] && [ $# -gt 0 ] && rc=0
  [ "$rc" = 0 ] || host=1
done
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
