#!/usr/bin/env bash
# Builds the emulated TLS-offload NIC (labkit/features/offload/kmod, module tlsnic) for every
# cached VM kernel whose config has CONFIG_TLS_DEVICE=y, against that kernel's own Debian
# headers, and installs the .ko into the cached kernel's module tree
# (<kernel>/lib/modules/<ver>/updates/tlsnic.ko, then depmod) so `modprobe tlsnic` works in
# the VM. Nothing is installed on the host: the headers .debs are unpacked next to the
# cached kernel (<kernel>/build/) and their absolute paths are rewritten to point there.
# The packages come through labkit's own apt lists (the kernel catalogue), never /etc/apt's.
# Each cached point release (debian-6.12.69, ...) gets its own module; kernels built with
# `labkit kernel build` (no package) are skipped.
#
#   bash scripts/build_kmod.sh [--force] [KERNEL_NAME...]    # default: every cached kernel
#
# Idempotent and silent when the module is already built from the same sources for the same
# kernel package. Honours LABKIT_KERNELS_DIR and LABKIT_CACHE_DIR like labkit itself.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SRC=$REPO/labkit/features/offload/kmod
MODULE=tlsnic
KERNELS=${LABKIT_KERNELS_DIR:-/var/lib/labkit/kernels}
DOWNLOADS=${LABKIT_CACHE_DIR:-/var/cache/labkit}/downloads
CC_DEFAULT=x86_64-linux-gnu-gcc-12   # what Debian 12's kernels were built with
PY=${LABKIT_PYTHON:-$REPO/.venv/bin/python}

say() { echo "build_kmod: $*"; }
die() { echo "build_kmod: $*" >&2; exit 1; }

force=0
names=()
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $arg (use --force or kernel names, e.g. debian-6.12)" ;;
    *) names+=("$arg") ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (it writes into $KERNELS): sudo bash scripts/build_kmod.sh"
missing=()
for tool in make "$CC_DEFAULT" x86_64-linux-gnu-strip apt-get apt-cache dpkg-deb depmod flock sha256sum python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  die "missing tools: ${missing[*]}. Install them with: apt-get install -y make gcc-12 kmod dpkg apt util-linux python3"
fi
[ -d "$KERNELS" ] || die "no kernel cache at $KERNELS: fetch one first with .venv/bin/labkit vm kernels fetch debian-6.12"

if [ ${#names[@]} -eq 0 ]; then
  for meta in "$KERNELS"/*/kernel.json; do
    [ -e "$meta" ] && [ ! -L "$(dirname "$meta")" ] && names+=("$(basename "$(dirname "$meta")")")
  done
  [ ${#names[@]} -gt 0 ] || die "no cached kernel in $KERNELS: fetch one with .venv/bin/labkit vm kernels fetch debian-6.12"
fi

# One line of kernel.json, without jq (python3 is there wherever labkit is).
meta_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2"; }

# labkit's apt options (its own sources and lists), refreshing the lists when a day old.
[ -x "$PY" ] || die "no labkit Python at $PY (run scripts/setup.sh, or set LABKIT_PYTHON)"
mapfile -t APT_OPTS < <("$PY" -c 'import sys
from labkit.hosts.vm import catalogue
catalogue.update(progress=lambda m: print("build_kmod:", m, file=sys.stderr))
print("\n".join(catalogue.apt_options()))') || die "cannot read labkit's kernel lists (see above)"
[ ${#APT_OPTS[@]} -gt 0 ] || die "labkit gave no apt options"

# The sources, this script and the kernel package together decide whether to rebuild.
source_hash() {
  (cd "$SRC" && find . -type f \( -name '*.c' -o -name '*.h' -o -name Makefile \) -not -path './user/*' \
     | LC_ALL=C sort | xargs sha256sum; sha256sum "$REPO/scripts/build_kmod.sh" | cut -d' ' -f1; echo "$1") \
    | sha256sum | cut -d' ' -f1
}

# apt-get download PKG=VER into $DOWNLOADS unless a .deb of that version is already there;
# sets DEB to its path.
download() {
  local pkg=$1 ver=$2
  DEB=$(ls "$DOWNLOADS/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -n "$DEB" ]; then return; fi
  if ! apt-cache "${APT_OPTS[@]}" show "$pkg=$ver" >/dev/null 2>&1; then
    die "labkit's kernel lists have no $pkg version $ver (needed to build $MODULE for that kernel). Refresh them with \`.venv/bin/labkit vm kernels list --available --refresh\`; if the mirror dropped that version, fetch a newer kernel."
  fi
  mkdir -p "$DOWNLOADS"
  (cd "$DOWNLOADS" && apt-get -qq "${APT_OPTS[@]}" -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null) \
    || die "apt-get download $pkg=$ver failed; check the network and refresh the lists (\`.venv/bin/labkit vm kernels list --available --refresh\`)"
  DEB=$(ls "$DOWNLOADS/${pkg}_${ver//:/%3a}_"*.deb | head -n1)
}

# Unpack linux-headers-<ver> and what it needs to build (its -common and linux-kbuild
# dependencies) into $1/root and make the tree self-contained.
unpack_headers() {
  local build=$1 version=$2 pkgver=$3 headers deps pkg debs=() tmp
  headers=linux-headers-$version
  apt-cache "${APT_OPTS[@]}" show "$headers=$pkgver" >/dev/null 2>&1 \
    || die "labkit's kernel lists have no $headers version $pkgver (the headers of the cached kernel). Refresh them (\`.venv/bin/labkit vm kernels list --available --refresh\`); if the mirror dropped that version, fetch a newer kernel."
  # Depends names the exact -common and linux-kbuild packages (linux-kbuild-6.1 for 6.1,
  # linux-kbuild-6.12.117+deb12 for 6.12); they share the headers' source version.
  deps=$(apt-cache "${APT_OPTS[@]}" show "$headers=$pkgver" | sed -n 's/^Depends: //p' | head -n1 | tr ',|' '\n\n' \
         | sed 's/^ *//; s/ .*//' | grep -E '^linux-(headers-.*-common|kbuild-)' || true)
  [ -n "$deps" ] || die "cannot tell from apt which -common and linux-kbuild packages $headers $pkgver needs"
  say "downloading $headers $pkgver and $(echo $deps | tr '\n' ' ')"
  for pkg in $headers $deps; do download "$pkg" "$pkgver"; debs+=("$DEB"); done
  tmp=$(mktemp -d "$build/.root.XXXXXX")
  for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$tmp"; done
  # Debian's tree assumes it lives in /: the -amd64 Makefile includes the -common one by an
  # absolute path, and lib/modules/<ver>/{build,source} are absolute symlinks. Point them here.
  local final=$build/root
  sed -i -e "s|^include /usr/src/|include $final/usr/src/|" \
         -e "s|^KBUILD_OUTPUT=/usr/src/|KBUILD_OUTPUT=$final/usr/src/|" "$tmp/usr/src/linux-headers-$version/Makefile"
  find "$tmp" -type l -lname '/*' | while read -r link; do
    ln -sfn "$final$(readlink "$link")" "$link"
  done
  rm -rf "$final"
  mv "$tmp" "$final"
}

# The compiler the kernel was built with (CONFIG_CC_VERSION_TEXT) when this machine has it,
# else Debian 12's gcc-12: kbuild then warns that the compiler differs, which is harmless
# for this module as long as the build succeeds.
kernel_cc() {
  local want
  want=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*/\1/p' "$1")
  if [ -n "$want" ] && command -v "$want" >/dev/null; then echo "$want"; else echo "$CC_DEFAULT"; fi
}

# linux-kbuild's host programs (fixdep, modpost, genksyms, objtool) are linked against the
# glibc of the Debian release the kernel was built for. 7.x kernels' were built with gcc >= 15,
# whose C23 default turns strtol & co. into __isoc23_strtol@GLIBC_2.38, which Debian 12's
# glibc (2.36) lacks; nothing else they use is newer. So, in the unpacked copy only: mark
# those version needs weak (the loader then tolerates their absence) and provide the four
# __isoc23_strto* functions from a small library preloaded for the build (KBUILD_PRELOAD).
# The rest of each program is Debian's own binary, unchanged.
KBUILD_PRELOAD=
host_tools() {
  local root=$1 version=$2 kb compat=$1/../compat log=$1/../hosttools.log
  KBUILD_PRELOAD=
  kb=$(dirname "$(readlink -f "$root/usr/src/linux-headers-$version/scripts")")
  [ -d "$kb/scripts" ] || return 0
  if ! tool_fails "$kb" "$compat/isoc23.so"; then
    [ -f "$compat/isoc23.so" ] && KBUILD_PRELOAD=$compat/isoc23.so
    return 0
  fi
  say "$version: the headers' host tools need glibc 2.38's __isoc23_strto*; adding them (see build/hosttools.log)"
  mkdir -p "$compat"
  cat > "$compat/isoc23.c" <<'C'
/* C23's strtol family as glibc 2.38 names them, for kbuild tools built on a newer Debian. */
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
C
  "$CC_DEFAULT" -shared -fPIC -O2 -o "$compat/isoc23.so" "$compat/isoc23.c" >"$log" 2>&1 || return 1
  python3 - "$kb" >>"$log" 2>&1 <<'PY' || return 1
"""Mark glibc version needs newer than this machine's as weak in every ELF under a dir."""
import os, struct, sys, platform
host = tuple(int(x) for x in platform.libc_ver()[1].split("."))
def too_new(name: bytes) -> bool:
    if not name.startswith(b"GLIBC_2."):
        return False
    return tuple(int(x) for x in name[6:].decode().split(".")) > host
for top, _, files in os.walk(sys.argv[1]):
    for f in files:
        path = os.path.join(top, f)
        if os.path.islink(path):
            continue
        with open(path, "rb") as fh:
            data = bytearray(fh.read())
        if data[:5] != b"\x7fELF\x02":
            continue
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        changed = []
        for sec in secs:
            if sec[1] != 0x6FFFFFFE:  # SHT_GNU_verneed
                continue
            strtab = secs[sec[6]][4]
            off = sec[4]
            for _ in range(sec[7]):
                _, cnt, _, aux, nxt = struct.unpack_from("<HHIII", data, off)
                aoff = off + aux
                for _ in range(cnt):
                    _, flags, _, name, anext = struct.unpack_from("<IHHII", data, aoff)
                    vname = bytes(data[strtab + name:]).split(b"\0", 1)[0]
                    if too_new(vname) and not flags & 2:
                        struct.pack_into("<H", data, aoff + 4, flags | 2)  # VER_FLG_WEAK
                        changed.append(vname.decode())
                    if not anext:
                        break
                    aoff += anext
                if not nxt:
                    break
                off += nxt
        if changed:
            tmp = path + ".tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, os.stat(path).st_mode)
            os.replace(tmp, path)
            print(f"{path}: weak {', '.join(sorted(set(changed)))}")
PY
  ! tool_fails "$kb" "$compat/isoc23.so" >>"$log" || return 1
  KBUILD_PRELOAD=$compat/isoc23.so
}

# Succeeds (and names it) when one of the kbuild tools under $1 cannot start here, with $2
# preloaded (a missing glibc version or symbol).
tool_fails() {
  local tool
  for tool in "$1"/scripts/basic/fixdep "$1"/scripts/mod/modpost.real-lsb-64 \
              "$1"/scripts/genksyms/genksyms "$1"/tools/objtool/objtool.real-x86; do
    [ -x "$tool" ] || continue
    case $(LD_BIND_NOW=1 LD_PRELOAD="$2" "$tool" </dev/null 2>&1 || true) in
      *"symbol lookup error"*|*": version \`GLIBC_"*) echo "$tool does not start"; return 0 ;;
    esac
  done
  return 1
}

build_one() {
  local name=$1 kdir=$KERNELS/$1 version pkgver config build stamp want ko log kbuild cc
  [ -f "$kdir/kernel.json" ] || die "$name is not a cached kernel ($kdir/kernel.json missing); see .venv/bin/labkit vm kernels list"
  version=$(meta_field "$kdir/kernel.json" version)
  pkgver=$(meta_field "$kdir/kernel.json" package_version)
  if [ -z "$pkgver" ] || [ "$(meta_field "$kdir/kernel.json" source)" = built ]; then
    say "$name ($version): skipped, not a Debian package (a built kernel carries its own modules)"; return
  fi
  config=$kdir/boot/config-$version
  if [ ! -f "$config" ]; then
    say "$name ($version): skipped, no boot/config-$version to read CONFIG_TLS_DEVICE from"; return
  fi
  if ! grep -q '^CONFIG_TLS_DEVICE=y' "$config"; then
    say "$name ($version): skipped, CONFIG_TLS_DEVICE is not set in its config (no TLS offload API)"; return
  fi
  if ! apt-cache "${APT_OPTS[@]}" show "linux-headers-$version=$pkgver" >/dev/null 2>&1; then
    # The mirror keeps older point releases' signed images longer than their headers.
    say "$name ($version): skipped, the mirror no longer serves linux-headers-$version $pkgver (only the image), so $MODULE cannot be built for it; the offload NIC is unavailable on this kernel"
    return
  fi
  build=$kdir/build
  stamp=$build/$MODULE.stamp
  ko=$kdir/lib/modules/$version/updates/$MODULE.ko
  want=$(source_hash "$name $version $pkgver")
  if [ $force = 0 ] && [ -f "$ko" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return  # already built from these sources for this kernel package: stay quiet
  fi
  mkdir -p "$build"
  kbuild=$build/root/usr/src/linux-headers-$version
  cc=$(kernel_cc "$config")
  # Options the kernel's (newer) compiler had and this one lacks: let kbuild fall back.
  local cc_overrides=()
  if grep -q '^CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=y' "$config" \
     && ! echo 'int x;' | "$cc" -fmin-function-alignment=16 -x c -c -o /dev/null - 2>/dev/null; then
    cc_overrides+=(CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=)
  fi
  if [ ! -f "$build/headers.stamp" ] || [ "$(cat "$build/headers.stamp")" != "$pkgver" ] \
     || [ ! -f "$kbuild/Makefile" ]; then
    unpack_headers "$build" "$version" "$pkgver"
    echo "$pkgver" > "$build/headers.stamp"
  fi
  # Build a copy: kbuild writes objects next to the sources, and the checkout is shared.
  rm -rf "$build/src"
  mkdir -p "$build/src"
  cp "$SRC"/Makefile "$SRC"/*.c "$SRC"/*.h "$build/src/"
  log=$build/make.log
  host_tools "$build/root" "$version" || die "$name: the headers' host tools do not run on this machine's glibc and could not be made to (log: $build/hosttools.log)"
  say "$name ($version): building $MODULE.ko against linux-headers-$version $pkgver with $cc"
  # The exact invocation, one word a line (the first is LD_PRELOAD's value): the host test of
  # the module's warnings builds the same way from it instead of keeping its own copy.
  printf '%s\n' "$KBUILD_PRELOAD" "CC=$cc" CONFIG_DEBUG_INFO_BTF_MODULES= "${cc_overrides[@]}" \
    > "$build/make.args"
  # CONFIG_DEBUG_INFO_BTF_MODULES= : BTF for an out-of-tree module needs pahole, and nothing
  # here uses it (no BPF programs attach to tlsnic).
  if ! LD_PRELOAD=$KBUILD_PRELOAD make -C "$kbuild" M="$build/src" CC="$cc" CONFIG_DEBUG_INFO_BTF_MODULES= \
       "${cc_overrides[@]}" modules \
       >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "$name: building $MODULE.ko failed (full log: $log)"
  fi
  # debug info is 90% of the file and the guest reads it over 9p at every modprobe
  # installed by rename: a VM running beside this (a test tier) never loads a half-written file
  install -D -m 0644 "$build/src/$MODULE.ko" "$ko.new"
  x86_64-linux-gnu-strip --strip-debug "$ko.new"
  mv -f "$ko.new" "$ko"
  depmod -b "$kdir" "$version" || die "$name: depmod -b $kdir $version failed"
  echo "$want" > "$stamp"
  say "$name ($version): installed $ko (modprobe $MODULE in the VM)"
}

mkdir -p "$KERNELS"
# labkit's kernel fetch takes the same lock: a refetch must not replace a tree we build in.
exec 9>"$KERNELS/.lock"
flock 9
for name in "${names[@]}"; do build_one "$name"; done
