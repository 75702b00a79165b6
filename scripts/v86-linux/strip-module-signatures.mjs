// SPDX-License-Identifier: MIT
// Removes the appended signature from Linux kernel modules, in place:
// `node strip-module-signatures.mjs FILE.ko...`. Checking a module's RSA signature at load time
// costs seconds in an emulated CPU; the kernel loads an unsigned module all the same (it only
// notes a taint) unless signatures are enforced, which the v86 guest does not do.
// Layout at the end of a signed module: signature bytes, signer and key id (both empty for
// PKCS#7), a 12-byte header whose last 4 bytes are the big-endian signature length, then the
// 28-byte magic string. A file without the magic is left as it is.

import { readFileSync, writeFileSync } from 'node:fs';

const MAGIC = Buffer.from('~Module signature appended~\n');
const HEADER_BYTES = 12;

let stripped = 0;
for (const path of process.argv.slice(2)) {
  const bytes = readFileSync(path);
  if (bytes.length < MAGIC.length + HEADER_BYTES || !bytes.subarray(bytes.length - MAGIC.length).equals(MAGIC)) continue;
  const header = bytes.subarray(bytes.length - MAGIC.length - HEADER_BYTES, bytes.length - MAGIC.length);
  const signerBytes = header[3];
  const keyIdBytes = header[4];
  const signatureBytes = header.readUInt32BE(8);
  const end = bytes.length - MAGIC.length - HEADER_BYTES - signatureBytes - signerBytes - keyIdBytes;
  if (end <= 0) throw new Error(`strip-module-signatures: ${path}: the signature header gives a length past the file's start`);
  writeFileSync(path, bytes.subarray(0, end));
  stripped++;
}
console.log(`strip-module-signatures: ${stripped} of ${process.argv.length - 2} modules had a signature`);
