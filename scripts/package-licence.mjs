// SPDX-License-Identifier: MIT
// The licence notice of a package the build bundles into what it ships, from the package's own
// LICENSE file (used by bundle-cli.mjs and embed-zstd-worker-decoder.mjs).
import { readFileSync } from 'node:fs';

/** A comment opening with `/*!` (which minifiers keep) holding the name, version, licence and LICENSE text of package `name` under `root`. */
export function licenceComment(root, name) {
  const { version, license } = JSON.parse(readFileSync(`${root}node_modules/${name}/package.json`, 'utf8'));
  const text = readFileSync(`${root}node_modules/${name}/LICENSE`, 'utf8').trim().replaceAll('*/', '* /');
  return `/*! ${name} ${version} (${license}), bundled:\n${text}\n*/`;
}
