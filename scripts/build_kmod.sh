#!/usr/bin/env bash
# Builds the emulated TLS-offload NIC (labkit/features/offload/kmod, module tlsnic) for every
# cached VM kernel whose config has CONFIG_TLS_DEVICE=y, against that kernel's own Debian
# headers, and installs the .ko into the cached kernel's module tree
# (<kernel>/lib/modules/<ver>/updates/tlsnic.ko, then depmod) so `modprobe tlsnic` works in
# the VM. Nothing is installed on the host: the headers .debs are unpacked next to the
# cached kernel (<kernel>/build/) and their absolute paths are rewritten to point there.
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
CC_BIN=x86_64-linux-gnu-gcc-12   # what Debian's 12 kernels were built with (CONFIG_CC_VERSION_TEXT)

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
for tool in make "$CC_BIN" x86_64-linux-gnu-strip apt-get apt-cache dpkg-deb depmod flock sha256sum python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  die "missing tools: ${missing[*]}. Install them with: apt-get install -y make gcc-12 kmod dpkg apt util-linux python3"
fi
[ -d "$KERNELS" ] || die "no kernel cache at $KERNELS: fetch one first with .venv/bin/labkit vm kernels fetch debian-6.12"

if [ ${#names[@]} -eq 0 ]; then
  for meta in "$KERNELS"/*/kernel.json; do
    [ -e "$meta" ] && names+=("$(basename "$(dirname "$meta")")")
  done
  [ ${#names[@]} -gt 0 ] || die "no cached kernel in $KERNELS: fetch one with .venv/bin/labkit vm kernels fetch debian-6.12"
fi

# One line of kernel.json, without jq (python3 is there wherever labkit is).
meta_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

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
  if ! apt-cache show "$pkg=$ver" >/dev/null 2>&1; then
    die "apt knows no $pkg version $ver (needed to build $MODULE for that kernel). Run \`apt-get update\`; the 6.12 packages come from bookworm-security (deb http://deb.debian.org/debian-security bookworm-security main)."
  fi
  mkdir -p "$DOWNLOADS"
  (cd "$DOWNLOADS" && apt-get -qq -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null) \
    || die "apt-get download $pkg=$ver failed; check the network and run \`apt-get update\`"
  DEB=$(ls "$DOWNLOADS/${pkg}_${ver//:/%3a}_"*.deb | head -n1)
}

# Unpack linux-headers-<ver> and what it needs to build (its -common and linux-kbuild
# dependencies) into $1/root and make the tree self-contained.
unpack_headers() {
  local build=$1 version=$2 pkgver=$3 headers deps pkg debs=() tmp
  headers=linux-headers-$version
  apt-cache show "$headers=$pkgver" >/dev/null 2>&1 \
    || die "apt knows no $headers version $pkgver (the headers of the cached kernel). Run \`apt-get update\` and try again; if the kernel was superseded, refetch it with .venv/bin/labkit vm kernels fetch."
  # Depends names the exact -common and linux-kbuild packages (linux-kbuild-6.1 for 6.1,
  # linux-kbuild-6.12.117+deb12 for 6.12); they share the headers' source version.
  deps=$(apt-cache show "$headers=$pkgver" | sed -n 's/^Depends: //p' | head -n1 | tr ',|' '\n\n' \
         | sed 's/^ *//; s/ .*//' | grep -E '^linux-(headers-.*-common|kbuild-)' || true)
  [ -n "$deps" ] || die "cannot tell from apt which -common and linux-kbuild packages $headers $pkgver needs"
  say "downloading $headers $pkgver and $(echo $deps | tr '\n' ' ')"
  for pkg in $headers $deps; do download "$pkg" "$pkgver"; debs+=("$DEB"); done
  tmp=$(mktemp -d "$build/.root.XXXXXX")
  for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$tmp"; done
  # Debian's tree assumes it lives in /: the -amd64 Makefile includes the -common one by an
  # absolute path, and lib/modules/<ver>/{build,source} are absolute symlinks. Point them here.
  local final=$build/root
  sed -i "s|^include /usr/src/|include $final/usr/src/|" "$tmp/usr/src/linux-headers-$version/Makefile"
  find "$tmp" -type l -lname '/*' | while read -r link; do
    ln -sfn "$final$(readlink "$link")" "$link"
  done
  rm -rf "$final"
  mv "$tmp" "$final"
}

build_one() {
  local name=$1 kdir=$KERNELS/$1 version pkgver config build stamp want ko log kbuild
  [ -f "$kdir/kernel.json" ] || die "$name is not a cached kernel ($kdir/kernel.json missing); see .venv/bin/labkit vm kernels list"
  version=$(meta_field "$kdir/kernel.json" version)
  pkgver=$(meta_field "$kdir/kernel.json" package_version)
  config=$kdir/boot/config-$version
  if [ ! -f "$config" ]; then
    say "$name ($version): skipped, no boot/config-$version to read CONFIG_TLS_DEVICE from"; return
  fi
  if ! grep -q '^CONFIG_TLS_DEVICE=y' "$config"; then
    say "$name ($version): skipped, CONFIG_TLS_DEVICE is not set in its config (no TLS offload API)"; return
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
  say "$name ($version): building $MODULE.ko against linux-headers-$version $pkgver"
  # CONFIG_DEBUG_INFO_BTF_MODULES= : BTF for an out-of-tree module needs pahole, and nothing
  # here uses it (no BPF programs attach to tlsnic).
  if ! make -C "$kbuild" M="$build/src" CC="$CC_BIN" CONFIG_DEBUG_INFO_BTF_MODULES= modules \
       >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "$name: building $MODULE.ko failed (full log: $log)"
  fi
  # debug info is 90% of the file and the guest reads it over 9p at every modprobe
  install -D -m 0644 "$build/src/$MODULE.ko" "$ko"
  x86_64-linux-gnu-strip --strip-debug "$ko"
  depmod -b "$kdir" "$version" || die "$name: depmod -b $kdir $version failed"
  echo "$want" > "$stamp"
  say "$name ($version): installed $ko (modprobe $MODULE in the VM)"
}

mkdir -p "$KERNELS"
# labkit's kernel fetch takes the same lock: a refetch must not replace a tree we build in.
exec 9>"$KERNELS/.lock"
flock 9
for name in "${names[@]}"; do build_one "$name"; done
