#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the v86 Linux guest from the Debian i386 packages download.sh fetched:
#   OUT/bzImage         the 686 kernel, booted by v86's bzimage option
#   OUT/initramfs.cpio  busybox, mke2fs (as mkfs.ext4) with its libraries, the ATA/SCSI disk and ext4 modules
#                       (with their dependencies, in load order) and the guest's /init
#   OUT/rootfs/         a root file system tree for a disk image (busybox, the libraries, all
#                       the kernel's ATA, SCSI and file system modules, the guest's boot script);
#                       bench/v86-boot.ts makes an ext4 image of it with mke2fs -d
#   OUT/guest.json      the kernel release, its command line and the package versions used
# Usage: build.sh [DEBS_DIR (default build/v86-linux/debs)] [OUT_DIR (default build/v86-linux)]
# Needs dpkg-deb, readelf and node on the host; runs no i386 code.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
debs=${1:-build/v86-linux/debs}
out=${2:-build/v86-linux}

shopt -s nullglob
deb_files=("$debs"/*_i386.deb)
if [ ${#deb_files[@]} -eq 0 ]; then
  echo "build.sh: no i386 packages in $debs; run scripts/v86-linux/download.sh first" >&2
  exit 1
fi

extract=$out/extract
rm -rf "$extract" "$out/initramfs-root" "$out/rootfs" "$out/initramfs.cpio.gz"
mkdir -p "$extract"
for deb in "${deb_files[@]}"; do dpkg-deb -x "$deb" "$extract"; done

releases=("$extract"/lib/modules/*)
if [ ${#releases[@]} -ne 1 ]; then
  echo "build.sh: expected one kernel in $debs, found ${#releases[@]}" >&2
  exit 1
fi
release=$(basename "${releases[0]}")
modules=$extract/lib/modules/$release

# --- kernel modules: the requested ones and their dependencies, dependencies first -----------
declare -A module_path=()
while IFS= read -r ko; do
  name=$(basename "$ko" .ko)
  module_path[${name//-/_}]=$ko
done < <(find "$modules/kernel" -name '*.ko')

ordered=()
declare -A visited=()
add_module() {
  local name=${1//-/_}
  [ -n "${visited[$name]:-}" ] && return 0
  visited[$name]=1
  local ko=${module_path[$name]:-}
  if [ -z "$ko" ]; then
    echo "build.sh: kernel module $name not found in $release" >&2
    exit 1
  fi
  local depends dep
  depends=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | head -1)
  for dep in ${depends//,/ }; do add_module "$dep"; done
  ordered+=("$name")
}
# crc32c_generic first: ext4 and jbd2 ask for the crc32c algorithm (a soft dependency).
for module in crc32c_generic ata_piix sd_mod ext4; do add_module "$module"; done

# --- shared libraries of a program, found among the extracted packages -----------------------
lib_dirs=("$extract/lib/i386-linux-gnu" "$extract/usr/lib/i386-linux-gnu")
declare -A libs_seen=()
copy_libs() {  # copy_libs ELF DEST_ROOT
  local lib dir found
  for lib in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -n "${libs_seen[$2/$lib]:-}" ] && continue
    libs_seen[$2/$lib]=1
    found=
    for dir in "${lib_dirs[@]}"; do
      if [ -e "$dir/$lib" ]; then found=$dir/$lib; break; fi
    done
    if [ -z "$found" ]; then
      echo "build.sh: $lib (needed by $(basename "$1")) is not in the downloaded packages" >&2
      exit 1
    fi
    cp -L "$found" "$2/lib/$lib"
    copy_libs "$found" "$2"
  done
}

# --- a minimal tree: busybox, mke2fs and its libraries ------------------------------------------
base_tree() {  # base_tree ROOT
  mkdir -p "$1"/{bin,sbin,dev,proc,sys,mnt,tmp,etc,lib/modules}
  cp "$extract/bin/busybox" "$1/bin/busybox"
  # As mkfs.ext4: busybox's shell would run its own, ext2-only mke2fs for the name mke2fs.
  cp "$extract/sbin/mke2fs" "$1/sbin/mkfs.ext4"
  cp "$extract/etc/mke2fs.conf" "$1/etc/mke2fs.conf"
  cp -L "$extract/lib/ld-linux.so.2" "$1/lib/ld-linux.so.2"
  copy_libs "$1/sbin/mkfs.ext4" "$1"
}

# --- the initramfs ------------------------------------------------------------------------------
root=$out/initramfs-root
base_tree "$root"
install -m 0755 "$here/init" "$root/init"
: >"$root/lib/modules/load-order"
for name in "${ordered[@]}"; do
  cp "${module_path[$name]}" "$root/lib/modules/$name.ko"
  echo "$name" >>"$root/lib/modules/load-order"
done
node "$here/strip-module-signatures.mjs" "$root"/lib/modules/*.ko
cp "$extract/boot/vmlinuz-$release" "$out/bzImage"
node "$here/make-initramfs.mjs" "$root" "$out/initramfs.cpio"

# --- the root file system tree for a disk ---------------------------------------------------------
rootfs=$out/rootfs
base_tree "$rootfs"
install -m 0755 "$here/rootfs-boot.sh" "$rootfs/sbin/boot.sh"
for sub in drivers/ata drivers/scsi fs lib crypto; do
  mkdir -p "$rootfs/lib/modules/$release/kernel/$sub"
  cp -r "$modules/kernel/$sub/." "$rootfs/lib/modules/$release/kernel/$sub/"
done
find "$rootfs/lib/modules" -name '*.ko' -exec node "$here/strip-module-signatures.mjs" {} +
cp "$extract/boot/config-$release" "$extract/boot/System.map-$release" "$rootfs/lib/modules/$release/"

# The kernel command line the guest boots with (the caller appends qw.mode=...): the serial port
# as console, only errors printed, and no probing for hardware v86 lacks or self-tests that cost
# seconds in an emulated CPU.
kernel_args="console=ttyS0 quiet noisapnp pnpbios=off cryptomgr.notests"

# --- what was built from what ---------------------------------------------------------------------
{
  printf '{\n  "kernelRelease": "%s",\n  "kernelArgs": "%s",\n  "modules": "%s",\n  "packages": [' "$release" "$kernel_args" "${ordered[*]}"
  sep=
  for deb in "${deb_files[@]}"; do
    printf '%s\n    "%s %s"' "$sep" "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
    sep=,
  done
  printf '\n  ]\n}\n'
} >"$out/guest.json"
rm -rf "$extract"
echo "build.sh: $out/bzImage ($release), $out/initramfs.cpio, $out/rootfs ($(du -sh "$rootfs" | cut -f1))"
