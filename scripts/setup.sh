#!/usr/bin/env bash
# Installs everything labkit needs on a fresh Debian 12 machine, as root:
# apt packages, a venv at .venv with labkit in it, and the VM kernels (debian-6.12,
# Debian 12's own debian-6.1, and the newest debian-7.2) for labs whose kernel features the host lacks. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

# busybox-static: vng builds an initramfs for the Debian kernel (9p and virtio are modules)
# tshark: checks captures and labkit's Wireshark dissector; vagrant(-libvirt): the
# Vagrantfile is validated in the tests
# graphviz: `dot` checks labkit's graph output; ethtool: large LANs, the offload NIC;
# make, gcc-12, binutils: the offload NIC's kernel module, built against each VM kernel's
# headers; libssl-dev, openssl: its user-space test harness and TLS peers
# chromium: the browser test clicks a notebook's widgets (driven by playwright)
# nvme-cli, nfs-kernel-server, nfs-common, keyutils: the handshake upcall's in-kernel
# consumers (NVMe/TCP and NFS with TLS) and the keyring for their PSKs
APT_PACKAGES=(iproute2 qemu-system-x86 kmod busybox-static tcpdump iperf3 tshark vagrant
              vagrant-libvirt graphviz ethtool make gcc-12 binutils libssl-dev openssl
              chromium nvme-cli nfs-kernel-server nfs-common keyutils
              gcc bc flex bison libelf-dev git)  # the last line: labkit kernel build

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (labkit creates network namespaces): sudo bash scripts/setup.sh" >&2
  exit 2
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ! python3 -c "import ensurepip, venv" 2>/dev/null; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then  # a venv cut off mid-way has no pip
  echo "setup: creating .venv"
  python3 -m venv --clear .venv
fi
# labkit is installed as a path (editable_mode=compat: a .pth line naming this tree), not
# through setuptools' import hook: the hook imports pathlib, re and urllib at every Python
# start (site: 20.6 -> 5.9 ms here; `python -c pass` in a TCG guest 1.2-1.5 -> 0.9 s), and a
# kernel tier starts Python dozens of times (traffic agents, daemons, CLI runs). A venv
# with the hook reinstalls.
if ! .venv/bin/python -c "import labkit, pytest, hypothesis, tlslite, jupyterlab, playwright" 2>/dev/null ||
   [ pyproject.toml -nt .venv/.labkit-installed ] ||
   compgen -G ".venv/lib/python3*/site-packages/__editable___labkit_*_finder.py" > /dev/null; then
  echo "setup: installing labkit and its dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' \
    --config-settings editable_mode=compat
  touch .venv/.labkit-installed
fi
# Byte-compile labkit and the tests now: VMs see this tree read-only, so a module the
# host has not compiled yet is compiled again at every import in a guest (seconds under TCG).
.venv/bin/python -m compileall -q -j 0 labkit tests benchmarks >/dev/null || true

if [ "${LABKIT_NO_VM:-0}" != 1 ]; then
  # each is cached once (a later run reuses it; a series takes its newest build)
  for kernel in debian-6.12 debian-6.1 debian-7.2; do
    .venv/bin/labkit vm kernels fetch "$kernel"
  done
  # the emulated TLS offload NIC, for each cached kernel that has CONFIG_TLS_DEVICE (a
  # point release whose headers the mirror no longer serves is skipped, saying so)
  bash scripts/build_kmod.sh
fi
echo "setup: done. The CLI is .venv/bin/labkit"
