#!/bin/busybox sh
# SPDX-License-Identifier: MIT
# /sbin/boot.sh of the v86 guest's root file system disk, run by the initramfs in qw.mode=rootfs
# (chrooted into the read-only disk): does what a small system's boot reads from its disk (runs
# programs and their libraries, loads kernel modules, reads the module tree), then prints
# "QW READY <files> <KiB>".
export PATH=/sbin:/bin
say() { echo "QW $*" >/dev/ttyS0; }
release=$(busybox uname -r)
mkfs.ext4 -V >/dev/null 2>&1 || { say "FAIL mkfs.ext4 from the disk does not run"; exit 1; }
for module in fs/fat/fat fs/fat/vfat fs/fat/msdos fs/nls/nls_cp437 fs/nls/nls_utf8 fs/squashfs/squashfs fs/minix/minix lib/libcrc32c fs/xfs/xfs; do
  busybox insmod "/lib/modules/$release/kernel/$module.ko" || { say "FAIL insmod $module"; exit 1; }
done
read=$(busybox find "/lib/modules/$release/kernel/fs" "/lib/modules/$release/kernel/drivers/ata" -type f | busybox xargs busybox cat | busybox wc -c)
say "READY $(busybox find / -xdev -type f | busybox wc -l) $((read / 1024))"
