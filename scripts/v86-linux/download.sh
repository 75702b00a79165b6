#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Downloads the Debian i386 packages the v86 Linux guest is built from (build.sh beside this file)
# into DEST (default build/v86-linux/debs): the current 686 (non-PAE) kernel, busybox-static and
# e2fsprogs' mke2fs with the shared libraries it needs. Uses `apt-get download` only, so nothing
# is installed; needs the i386 architecture in dpkg (`dpkg --add-architecture i386 && apt-get update`,
# which .ci/run does). Prints what it fetched.
set -euo pipefail
dest=${1:-build/v86-linux/debs}

if ! dpkg --print-foreign-architectures | grep -qx i386; then
  echo "download.sh: dpkg has no i386 architecture; run: dpkg --add-architecture i386 && apt-get update" >&2
  exit 1
fi

# The 686 meta-package names the current versioned kernel package; download that one.
kernel=$(apt-cache depends linux-image-686:i386 | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*-686\)\(:i386\)\{0,1\}$/\1/p' | head -1)
if [ -z "$kernel" ]; then
  echo "download.sh: apt-cache cannot resolve linux-image-686:i386 (is the i386 package list there? run apt-get update)" >&2
  exit 1
fi

packages=("$kernel" busybox-static e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 libc6)
mkdir -p "$dest"
rm -f "$dest"/*.deb
# apt-get download writes into the current directory; _apt cannot write into root's folders,
# which apt only warns about.
(cd "$dest" && apt-get download -q "${packages[@]/%/:i386}" 2>&1 | grep -v 'Download is performed unsandboxed' || true)
for package in "${packages[@]}"; do
  if ! ls "$dest/${package}_"*_i386.deb >/dev/null 2>&1; then
    echo "download.sh: ${package}:i386 was not downloaded" >&2
    exit 1
  fi
done
ls -l "$dest"
