// SPDX-License-Identifier: MIT
// Loops in a backing chain told by its names alone, for openers that resolve names themselves:
// each name leads to a path relative to the directory of the image that records it (as QEMU
// resolves them), so the same relative name twice may well be two files, and two names may be
// one. Symbolic links and hard links are beyond names; path-based opens also compare the files.

/** True for a name that does not depend on the directory of the image recording it. */
const isAbsolute = (name: string): boolean => /^(?:[/\\]|[A-Za-z]:[/\\])/.test(name);

/** `path` with '.' and '..' segments folded (leading '..' kept) and slashes unified. */
function normalized(path: string): string {
  const absolute = isAbsolute(path);
  const out: string[] = [];
  for (const segment of path.split(/[/\\]+/)) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else if (!(segment === '..' && absolute)) out.push(segment);
  }
  return `${absolute ? '/' : ''}${out.join('/')}`;
}

/**
 * True when the last of `names` (backing names from the top image down, each recorded by the
 * image the previous one names) leads to the same path as an earlier one: the chain loops.
 * Paths are relative to the top image's directory; absolute names stand as they are.
 */
export function chainRevisits(names: readonly string[]): boolean {
  const paths: string[] = [];
  let directory = '';
  for (const name of names) {
    const path = normalized(isAbsolute(name) || directory === '' ? name : `${directory}/${name}`);
    if (paths.includes(path)) return true;
    paths.push(path);
    const cut = path.lastIndexOf('/');
    directory = cut < 0 ? '' : path.slice(0, cut);
  }
  return false;
}
