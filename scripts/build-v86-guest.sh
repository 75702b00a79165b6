#!/bin/sh
# SPDX-License-Identifier: MIT
# Regenerates the committed v86 test guest binaries from test/fixtures/v86-guest/guest.asm:
# guest-hda.bin tests BIOS drive 0x80 (the boot disk), guest-hdb.bin tests drive 0x81.
set -eu
dir="$(dirname "$0")/../test/fixtures/v86-guest"
nasm -f bin -D TEST_DRIVE=0x80 -o "$dir/guest-hda.bin" "$dir/guest.asm"
nasm -f bin -D TEST_DRIVE=0x81 -o "$dir/guest-hdb.bin" "$dir/guest.asm"
