// SPDX-License-Identifier: MIT
// Vite settings of the browser example. Nothing here is about the library's wasm (its bytes are
// embedded): the aliases only stand in for `npm install qcow2-wasm`, pointing the package's
// entry points at this repository's build output (dist/, from `npm run build`).

import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const built = (entry: string) => fileURLToPath(new URL(`../../dist/bindings/${entry}.js`, import.meta.url));

export default defineConfig({
  // Relative asset URLs, so the built page works from any folder of any static server.
  base: './',
  resolve: {
    alias: [
      { find: /^qcow2-wasm\/browser$/, replacement: built('browser') },
      { find: /^qcow2-wasm\/v86$/, replacement: built('v86') },
    ],
  },
});
