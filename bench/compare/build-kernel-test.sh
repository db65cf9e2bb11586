#!/usr/bin/env bash
# Builds the kernel's own KVM selftest `demand_paging_test` (Linux 6.12, Debian's
# linux-source-6.12 package) into bench/out/demand_paging_test, for bench/compare/run.ts.
#
# Nothing built here is committed: everything lands in bench/out/ (gitignored).
#
#   bash bench/compare/build-kernel-test.sh           # build if missing (idempotent)
#   bash bench/compare/build-kernel-test.sh --force   # recompile the test (keeps the extracted tree)
#   bash bench/compare/build-kernel-test.sh --clean   # remove the extracted tree and binary
#
# Steps, each skipped when already done:
#   1. apt-get install linux-source-6.12 (and gcc/make) if the tarball or tools are missing
#   2. extract only what the build needs into bench/out/linux-6.12 (~20 s: decompressing the whole .tar.xz is the cost)
#   3. make headers        -> bench/out/linux-6.12/usr/include (the 6.12 uAPI: KVM, uffd)
#   4. make -C tools/testing/selftests/kvm <tree>/tools/testing/selftests/kvm/demand_paging_test
#   5. copy to bench/out/demand_paging_test
set -euo pipefail

SERIES=6.12
PKG="linux-source-$SERIES"
TARBALL="/usr/src/$PKG.tar.xz"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$repo/bench/out"
tree="$out/linux-$SERIES"
bin="$out/demand_paging_test"
kvmdir="$tree/tools/testing/selftests/kvm"
stamp_extract="$tree/.extracted"
stamp_headers="$tree/.headers"

die() { echo "build-kernel-test: error: $*" >&2; exit 1; }
say() { echo "build-kernel-test: $*" >&2; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  --clean) rm -rf "$tree" "$bin"; say "removed $tree and $bin"; exit 0 ;;
  -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) die "unknown argument '$1' (use --force, --clean or --help)" ;;
esac

[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (this is $(uname -m))"

if [ "$force" = 0 ] && [ -x "$bin" ] && [ "$bin" -nt "$stamp_headers" ]; then
  say "up to date: $bin (use --force to rebuild)"
  exit 0
fi

t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }

# --- 1. packages ---------------------------------------------------------------
need=()
[ -f "$TARBALL" ] || need+=("$PKG")
for tool in gcc make xz; do
  command -v "$tool" >/dev/null 2>&1 || case "$tool" in
    gcc) need+=(gcc libc6-dev) ;;
    make) need+=(make) ;;
    xz) need+=(xz-utils) ;;
  esac
done
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "need packages: ${need[*]} — run as root or: sudo apt-get install -y ${need[*]}"
  command -v apt-get >/dev/null || die "need packages ${need[*]} and there is no apt-get; get Linux $SERIES sources and gcc another way"
  mkdir -p "$out"
  aptlog="$out/apt.log"
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >>"$aptlog" 2>&1; }
  say "installing: ${need[*]} (apt-get output: $aptlog)"
  : >"$aptlog"
  if ! apt_install; then
    say "apt-get install failed; retrying after apt-get update"
    apt-get update -q >>"$aptlog" 2>&1 || { tail -n 20 "$aptlog" >&2; die "apt-get update failed"; }
    apt_install || { tail -n 20 "$aptlog" >&2; die "apt-get install ${need[*]} failed (is $PKG in your apt sources? Debian 12 has it in bookworm-security)"; }
  fi
fi
[ -f "$TARBALL" ] || die "$TARBALL still missing after installing $PKG"

# --- 2. extract the subset -----------------------------------------------------
# What `make headers` and the kvm selftests read; nothing else (no drivers/, fs/, ...).
members=(
  Makefile Kbuild
  scripts
  include/uapi
  arch/x86/Makefile arch/x86/Makefile_32.cpu arch/x86/Makefile.um arch/x86/Makefile.postlink
  arch/x86/include
  arch/x86/entry/syscalls
  arch/x86/tools
  usr/include
  tools/include tools/arch/x86 tools/lib tools/build tools/scripts
  tools/testing/selftests/lib.mk
  tools/testing/selftests/kselftest.h tools/testing/selftests/kselftest_harness.h
  tools/testing/selftests/rseq
  tools/testing/selftests/kvm
)
if [ ! -f "$stamp_extract" ] || [ "$TARBALL" -nt "$stamp_extract" ]; then
  say "extracting ${#members[@]} paths of $TARBALL into $tree"
  rm -rf "$tree"
  mkdir -p "$tree"
  tar -xJf "$TARBALL" -C "$tree" --strip-components=1 \
    "${members[@]/#/$PKG/}" \
    || die "tar failed to extract the needed subset of $TARBALL"
  touch "$stamp_extract"
  say "extracted ($(elapsed))"
else
  say "source subset already extracted: $tree"
fi

# --- 3. uAPI headers --------------------------------------------------------------
# The selftests compile against <tree>/usr/include (KHDR_INCLUDES / LINUX_HDR_PATH);
# the system's linux-libc-dev (6.1 on Debian 12) lacks what 6.12's selftests use.
jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -f "$stamp_headers" ] || [ "$stamp_extract" -nt "$stamp_headers" ]; then
  say "make headers"
  make -C "$tree" -s -j"$jobs" ARCH=x86_64 headers >&2 || die "make headers failed in $tree"
  [ -f "$tree/usr/include/linux/kvm.h" ] || die "make headers did not produce usr/include/linux/kvm.h"
  touch "$stamp_headers"
  say "headers installed ($(elapsed))"
else
  say "headers already installed: $tree/usr/include"
fi

# --- 4. the test --------------------------------------------------------------------
# Target path is absolute because lib.mk prefixes $(OUTPUT) (the kvm dir) to the programs.
# In 6.12 demand_paging_test is a top-level (arch-independent) kvm selftest.
log="$out/build-kernel-test.log"
say "make demand_paging_test (compiler output: $log)"
makeflags=()
[ "$force" = 1 ] && makeflags+=(-B)
if ! make -C "$kvmdir" -j"$jobs" "${makeflags[@]}" ARCH=x86_64 "$kvmdir/demand_paging_test" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  die "building demand_paging_test failed (last lines above; all of it in $log)"
fi

# --- 5. result ------------------------------------------------------------------------
install -m 0755 "$kvmdir/demand_paging_test" "$bin"
say "built $bin ($(elapsed))"
